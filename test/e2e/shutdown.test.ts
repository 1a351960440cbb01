import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { login, openSession, openSubscribe, settle, userFromToken } from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { embeddedProcess, within } from "../helpers/server-process.js";
import { startTcpProxy } from "../helpers/tcp-proxy.js";

let server: TestServer | undefined;
let proxy: Awaited<ReturnType<typeof startTcpProxy>> | undefined;
afterEach(async () => {
  await proxy?.close();
  await server?.destroy();
});

/**
 * A server that has accepted a client's connection but not yet read it when
 * its drain begins (a busy event loop, a slow network): the proxy holds what
 * the client wrote until the drain is under way.
 */
async function connectionUnreadAtDrain(frameGapMs: number) {
  server = await startServer();
  proxy = await startTcpProxy(`127.0.0.1:${server.port}`);
  const ann = await login(server, "ann", "ann-phone");
  // Ann's client, pointed at the proxy.
  const { chat } = userFromToken(
    { ...server, url: proxy.url },
    ann.userId,
    ann.deviceId,
    ann.token,
  );
  proxy.hold();
  const session = openSession(chat);
  await expect.poll(() => proxy!.holdingConnections).toBe(1);
  // The server has accepted the connection by now (the proxy connected on the client's connect).
  await settle(50);
  const stopping = server.stop();
  await settle(50);
  await proxy.release(frameGapMs);
  return { session, stopping };
}

describe("shutting down with a connection the server has not read yet", () => {
  it("answers its Session stream UNAVAILABLE when all of it is read at once", async () => {
    const { session, stopping } = await connectionUnreadAtDrain(0);
    await session.frames.until((f) => f.ended, 5000, "the stream to end");
    expect(session.frames.error?.code).toBe(Code.Unavailable);
    await stopping;
  });

  it("answers its Session stream UNAVAILABLE, not a reset, when its frames come one by one", async () => {
    const { session, stopping } = await connectionUnreadAtDrain(40);
    await session.frames.until((f) => f.ended, 5000, "the stream to end");
    expect(session.frames.error?.code).toBe(Code.Unavailable);
    await stopping;
  });

  it("gives a connection that never speaks the configured grace, then closes it", async () => {
    server = await startServer({ session: { drainGraceMs: 400 } });
    const silent = connect(server.port, "127.0.0.1");
    silent.on("error", () => undefined);
    await new Promise((resolve) => silent.once("connect", resolve));
    const closed = new Promise((resolve) => silent.once("close", resolve));
    await settle(50);
    const started = Date.now();
    await server.stop();
    const took = Date.now() - started;
    await closed;
    // It waited for the grace, not for the default (5 s).
    expect(took).toBeGreaterThanOrEqual(400);
    expect(took).toBeLessThan(4000);
  });
});

describe("shutting down with many sessions open", () => {
  it("logs one line for the sessions it ends, not a warning per stream", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "chat-shutdown-"));
    const proc = embeddedProcess(dataDir);
    try {
      const ts = { url: `http://127.0.0.1:${await proc.ready()}` } as TestServer;
      const users = await Promise.all(["ann", "bob", "cat"].map((n) => login(ts, n, `${n}-1`)));
      const streams = [
        ...users.map((u) => openSession(u.chat)),
        openSubscribe(users[0]!.via("connect")),
      ];
      for (const s of streams) await s.frames.synced();
      proc.kill("SIGTERM");
      expect(await within(proc.exit, 10_000, "the server to exit")).toEqual({
        code: 0,
        signal: null,
      });
      for (const s of streams) expect(s.frames.error?.code).toBe(Code.Unavailable);
      const lines = proc.out
        .slice(proc.out.indexOf('"shutting down"'))
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { level: number; msg: string; sessions?: number });
      expect(lines.filter((l) => l.level >= 40).map((l) => l.msg)).toEqual([]);
      expect(lines.filter((l) => l.msg.startsWith("ending sessions"))).toMatchObject([
        { sessions: streams.length },
      ]);
    } finally {
      proc.kill();
      await proc.exit;
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
