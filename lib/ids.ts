import { randomFillSync } from "node:crypto";

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";

// Random bytes drawn in bulk: one randomFillSync per 409 ids instead of a
// randomBytes call (and its Buffer) per id.
const pool = Buffer.alloc(4090);
let poolAt = pool.length;

// The time part of the last id: consecutive ids mostly share a millisecond.
let lastMs = -1;
let lastTime = "";

const timePart = (nowMs: number) => {
  if (nowMs === lastMs) return lastTime;
  let t = nowMs;
  let out = "";
  for (let i = 0; i < 10; i++) {
    out = alphabet[t % 32]! + out;
    t = Math.floor(t / 32);
  }
  lastMs = nowMs;
  lastTime = out;
  return out;
};

/**
 * A sortable, URL-safe id: 48 bits of milliseconds then 80 random bits, in
 * Crockford-style base32 (26 chars), with a kind prefix such as "c_" or "e_".
 */
export function newId(prefix: string, nowMs = Date.now()): string {
  if (poolAt + 10 > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  let out = prefix + timePart(nowMs);
  // 80 bits as 16 five-bit digits, in four 20-bit chunks (2.5 bytes each).
  const p = pool;
  for (let i = poolAt, end = poolAt + 10; i < end; i += 5) {
    const b2 = p[i + 2]!;
    const hi = (p[i]! << 12) | (p[i + 1]! << 4) | (b2 >> 4);
    const lo = ((b2 & 15) << 16) | (p[i + 3]! << 8) | p[i + 4]!;
    out +=
      alphabet[hi >> 15]! +
      alphabet[(hi >> 10) & 31] +
      alphabet[(hi >> 5) & 31] +
      alphabet[hi & 31] +
      alphabet[lo >> 15] +
      alphabet[(lo >> 10) & 31] +
      alphabet[(lo >> 5) & 31] +
      alphabet[lo & 31];
  }
  poolAt += 10;
  return out;
}
