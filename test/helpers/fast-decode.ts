import { Buffer } from "node:buffer";
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { expect } from "vitest";

/** A small deterministic generator, so a failure names the case that broke. */
export function rng(seed: number) {
  let x = seed;
  return () => {
    x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
    return x / 2_147_483_648;
  };
}

/**
 * Checks a hand-written fast path against fromBinary on messages it must read
 * itself: the same message from the bytes, and from a view into a larger
 * Buffer (as transports and SQLite hand bytes over).
 */
export function expectReadsPlain<Desc extends DescMessage>(
  schema: Desc,
  fast: (bytes: Uint8Array) => MessageShape<Desc> | undefined,
  plain: Uint8Array[],
) {
  for (const [i, bytes] of plain.entries()) {
    const want = fromBinary(schema, bytes);
    expect(fast(bytes), `case ${i}`).toStrictEqual(want);
    const framed = Buffer.concat([Buffer.from([9, 9]), bytes, Buffer.from([9])]);
    expect(fast(framed.subarray(2, 2 + bytes.length)), `case ${i}`).toStrictEqual(want);
  }
}

/**
 * Checks that a decoder with a fast path decodes or rejects exactly as
 * fromBinary does on what the fast path must leave to it: `others`, and
 * mutations of `plain` (fields repeated, an unknown field before or after,
 * invalid UTF-8 in field 1, which must be a string, cuts, garbage, and
 * `suffixes` appended). Only a cut at a field boundary may still pass as plain.
 */
export function expectLeavesRestToFromBinary<Desc extends DescMessage>(opts: {
  schema: Desc;
  decode: (bytes: Uint8Array) => MessageShape<Desc>;
  fast: (bytes: Uint8Array) => MessageShape<Desc> | undefined;
  plain: Uint8Array[];
  others: Uint8Array[];
  suffixes?: Uint8Array[];
  seed: number;
}) {
  const { schema, decode, fast } = opts;
  const same = (bytes: Uint8Array) => {
    let want: MessageShape<Desc>;
    try {
      want = fromBinary(schema, bytes);
    } catch (err) {
      expect(() => decode(bytes)).toThrow((err as Error).message);
      return;
    }
    expect(decode(bytes)).toStrictEqual(want);
  };
  const r = rng(opts.seed);
  const unknownField = Buffer.from([0xa0, 0x06, 0x01]); // field 100, varint 1
  const badUtf8 = Buffer.from([0x0a, 0x02, 0xc3, 0x28]); // field 1: an invalid 2-byte sequence
  let fastOnes = 0;
  for (const bytes of opts.plain) {
    const mutated = [
      Buffer.concat([bytes, bytes]), // every field twice: messages merge, scalars take the last
      Buffer.concat([bytes, unknownField]),
      Buffer.concat([unknownField, bytes]),
      Buffer.concat([badUtf8, bytes]),
      ...(opts.suffixes ?? []).map((s) => Buffer.concat([bytes, s])),
      bytes.subarray(0, Math.floor(r() * bytes.length)), // truncated
      Buffer.from(bytes).fill(0xff, Math.floor(r() * bytes.length), bytes.length),
    ];
    for (const m of mutated) {
      if (fast(m)) fastOnes++;
      same(m);
    }
  }
  for (const bytes of opts.others) {
    expect(fast(bytes)).toBeUndefined();
    same(bytes);
  }
  expect(fastOnes).toBeLessThan(opts.plain.length);
}
