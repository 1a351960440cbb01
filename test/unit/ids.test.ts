import { describe, expect, it } from "vitest";
import { newId } from "../../lib/ids.js";
import { checkConversationId } from "../../lib/validate.js";

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";

/** Reads the millisecond timestamp back out of an id's first ten characters. */
const timeOf = (id: string, prefix: string) =>
  [...id.slice(prefix.length, prefix.length + 10)].reduce(
    (t, c) => t * 32 + alphabet.indexOf(c),
    0,
  );

describe("newId", () => {
  it("is the prefix plus 26 characters of lower-case Crockford base32", () => {
    for (const prefix of ["c_", "e_", "g_", ""]) {
      const id = newId(prefix);
      expect(id.startsWith(prefix)).toBe(true);
      expect(id.slice(prefix.length)).toMatch(/^[0-9a-hjkmnp-tv-z]{26}$/);
    }
    expect(checkConversationId(newId("c_"))).toBeTruthy();
  });

  it("encodes the creation time in its first ten characters", () => {
    for (const ms of [0, 1, 1_700_000_000_123, 2 ** 48 - 1]) {
      expect(timeOf(newId("x_", ms), "x_")).toBe(ms);
    }
    const before = Date.now();
    const t = timeOf(newId("x_"), "x_");
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
  });

  it("sorts by creation time as a plain string", () => {
    const times = [5, 31, 32, 1000, 1_600_000_000_000, 1_600_000_000_001, 1_700_000_000_000];
    const ids = [...times].reverse().map((ms) => newId("e_", ms));
    const sorted = [...ids].sort();
    expect(sorted.map((id) => timeOf(id, "e_"))).toEqual(times);
  });

  it("does not repeat within one millisecond", () => {
    const ids = new Set(Array.from({ length: 20_000 }, () => newId("e_", 1_700_000_000_000)));
    expect(ids.size).toBe(20_000);
  });

  it("uses the whole alphabet in its random part", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) for (const c of newId("", 0).slice(10)) seen.add(c);
    expect([...seen].sort().join("")).toBe(alphabet);
  });
});
