import { describe, expect, it } from "vitest";
import { createMemorySoftState } from "../../lib/backends/memory/memory-soft-state.js";
import { softStateContract } from "./soft-state.contract.js";

softStateContract("memory", async () => {
  const soft = createMemorySoftState();
  return { soft, cleanup: () => soft.close() };
});

describe("memory soft state: bounded dedup cache", () => {
  it("drops the oldest entries once it grows past its bound, keeping the newest", async () => {
    const { dedup } = createMemorySoftState({ dedupEntries: 100 });
    for (let i = 0; i < 101; i++) await dedup.put(`k${i}`, { conversationId: "c", seq: BigInt(i) });
    // Past 100 entries the oldest tenth goes.
    for (let i = 0; i < 10; i++) expect(await dedup.get(`k${i}`)).toBeUndefined();
    for (let i = 10; i < 101; i++) expect((await dedup.get(`k${i}`))?.seq).toBe(BigInt(i));
  });
});
