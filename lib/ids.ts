import { randomBytes } from "node:crypto";

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";

/**
 * A sortable, URL-safe id: 48 bits of milliseconds then 80 random bits, in
 * Crockford-style base32 (26 chars), with a kind prefix such as "c_" or "e_".
 */
export function newId(prefix: string, nowMs = Date.now()): string {
  let out = "";
  let t = nowMs;
  const time: string[] = [];
  for (let i = 0; i < 10; i++) {
    time.push(alphabet[t % 32]!);
    t = Math.floor(t / 32);
  }
  out += time.reverse().join("");
  const rnd = randomBytes(10);
  let acc = 0;
  let bits = 0;
  for (const byte of rnd) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += alphabet[(acc >> bits) & 31];
    }
  }
  return prefix + out;
}
