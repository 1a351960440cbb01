import { describe, expect, it } from "vitest";
import { setBounded } from "../../lib/bounded-map.js";

describe("setBounded", () => {
  it("keeps at most `max` entries, forgetting the least recently set", () => {
    const m = new Map<string, number>();
    for (const k of ["a", "b", "c"]) setBounded(m, k, 1, 3);
    // Setting "a" again makes it the most recent: "b" goes first.
    setBounded(m, "a", 2, 3);
    setBounded(m, "d", 1, 3);
    expect([...m.keys()]).toEqual(["c", "a", "d"]);
    expect(m.get("a")).toBe(2);
    setBounded(m, "e", 1, 3);
    expect([...m.keys()]).toEqual(["a", "d", "e"]);
  });
});
