import { Buffer } from "node:buffer";
import type { WireType } from "@bufbuild/protobuf/wire";

/** Proto3 strings are UTF-8 checked, as fromBinary checks them: bad bytes throw. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Thrown by PlainReader for anything its caller's fast path does not lay out
 * itself; the caller catches it and hands the bytes to fromBinary, which
 * decodes them or throws the error for bad input.
 */
export const notPlain: unique symbol = Symbol("not plain");

const empty = new Uint8Array(0);

/**
 * A cursor for hand-written protobuf decoders of the few messages that are
 * decoded per message sent or read (fromBinary's reflection costs several µs
 * each). It reads only the shapes those decoders accept and throws `notPlain`
 * on anything else, so the decoders stay exact by falling back. Each decoder
 * keeps one reader and reuses it: decoding is synchronous and never re-entered.
 */
export class PlainReader {
  buf: Uint8Array = empty;
  pos = 0;

  /**
   * Runs a fast path `read` over `bytes`: its result, or undefined when it
   * threw notPlain. Any other error propagates.
   */
  attempt<T>(bytes: Uint8Array, read: () => T): T | undefined {
    this.buf = bytes;
    this.pos = 0;
    try {
      return read();
    } catch (err) {
      if (err !== notPlain) throw err;
      return undefined;
    } finally {
      this.buf = empty;
    }
  }

  /** A varint of at most 32 bits (tags, lengths, enums, bools). */
  uint32(end: number): number {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (this.pos >= end) throw notPlain;
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) {
        if (v > 0xffffffff) throw notPlain;
        return v;
      }
    }
    throw notPlain;
  }

  /** A uint64 varint as a bigint. */
  uint64(end: number): bigint {
    // Up to seven bytes (below 2^49: seqs, times in seconds) are summed as an
    // exact number, which skips bigint arithmetic for every value in practice.
    const start = this.pos;
    let small = 0;
    for (let shift = 0; shift < 49 && this.pos < end; shift += 7) {
      const b = this.buf[this.pos++]!;
      small += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return BigInt(small);
    }
    this.pos = start;
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= end) throw notPlain;
      const b = this.buf[this.pos++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) {
        if (v > 0xffffffffffffffffn) throw notPlain;
        return v;
      }
    }
    throw notPlain;
  }

  /** Reads a length-delimited field's length; returns where its contents end. */
  delimited(end: number): number {
    const len = this.uint32(end);
    if (this.pos + len > end) throw notPlain;
    return this.pos + len;
  }

  /** A length-delimited string, UTF-8 checked as fromBinary checks it. */
  string(end: number): string {
    const stop = this.delimited(end);
    const start = this.pos;
    const buf = this.buf;
    this.pos = stop;
    if (start === stop) return "";
    if (stop - start <= 16) {
      // Short ASCII (ids, most names) is cheaper built here than through a call into C++.
      let text = "";
      let i = start;
      for (; i < stop; i++) {
        const b = buf[i]!;
        if (b >= 0x80) break;
        text += String.fromCharCode(b);
      }
      if (i === stop) return text;
    }
    // Buffer's decoder is the fastest here but replaces bad bytes with U+FFFD,
    // so a string containing one is checked again strictly.
    const text = Buffer.isBuffer(buf)
      ? buf.toString("utf8", start, stop)
      : Buffer.from(buf.buffer, buf.byteOffset + start, stop - start).toString("utf8");
    if (text.includes("\ufffd")) {
      try {
        strictUtf8.decode(buf.subarray(start, stop));
      } catch {
        throw notPlain;
      }
    }
    return text;
  }

  /**
   * The field number of a field of the expected wire type, at most once per
   * message (`seen` has a bit per field number, which must be below 31).
   */
  field(tag: number, wireType: WireType, seen: number): number {
    const no = tag >>> 3;
    if ((tag & 7) !== wireType || no > 30 || seen & (1 << no)) throw notPlain;
    return no;
  }
}
