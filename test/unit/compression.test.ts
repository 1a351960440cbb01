import zlib from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  edgeCompressions,
  gzipCompression,
  gzipSyncMaxBytes,
} from "../../services/edge/compression.js";

const text = (bytes: number) =>
  new Uint8Array(Buffer.from("hello chat ".repeat(bytes / 11 + 1))).subarray(0, bytes);

describe("gzipCompression", () => {
  it("writes gzip that any decoder reads, below and above the synchronous size", async () => {
    for (const size of [0, 1, 1500, gzipSyncMaxBytes, gzipSyncMaxBytes + 1, 300_000]) {
      const input = text(size);
      const out = await gzipCompression.compress(input);
      expect(out).toBeInstanceOf(Uint8Array);
      expect(out.length).toBeLessThan(size + 40);
      expect(new Uint8Array(zlib.gunzipSync(out))).toEqual(input);
      expect(new Uint8Array(await gzipCompression.decompress(out, size + 1))).toEqual(input);
    }
  });

  it("refuses what decompresses past the limit, and bytes that are not gzip, with precise codes", async () => {
    const big = zlib.gzipSync(text(10_000));
    await expect(gzipCompression.decompress(big, 9_999)).rejects.toSatisfy(
      (e) => e instanceof ConnectError && e.code === Code.ResourceExhausted,
    );
    await expect(gzipCompression.decompress(new Uint8Array([1, 2, 3, 4]), 100)).rejects.toSatisfy(
      (e) => e instanceof ConnectError && e.code === Code.InvalidArgument,
    );
  });

  it("answers a truncated body as the client's error, in every encoding the edge accepts", async () => {
    const whole = {
      gzip: zlib.gzipSync(text(5_000)),
      br: zlib.brotliCompressSync(text(5_000)),
    } as Record<string, Buffer>;
    for (const c of edgeCompressions) {
      const bytes = whole[c.name]!;
      const cut = new Uint8Array(bytes.subarray(0, bytes.length - 8));
      const err = await c.decompress(cut, 100_000).catch((e: unknown) => e);
      expect(err, c.name).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code, c.name).toBe(Code.InvalidArgument);
      expect((err as ConnectError).cause, c.name).toBeDefined();
    }
  });
});
