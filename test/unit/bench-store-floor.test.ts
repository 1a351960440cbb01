import { describe, expect, it } from "vitest";
import { probeStoreFloor } from "../../bench/lib/store-floor.js";

describe("probeStoreFloor", () => {
  it("commits every message it times through the writer's statements, and charges CPU per event", () => {
    const floor = probeStoreFloor(640, 64, 20, 128);
    expect(floor.eventsPerCommit).toBe(64);
    expect(floor.events).toBe(640);
    // The warm-up's 128 and the measured 640, read back from the database.
    expect(floor.committed).toBe(768);
    expect(floor.cpuUsPerEvent).toBeGreaterThan(0);
  });

  it("rounds a count that does not divide into commits up to whole commits", () => {
    const floor = probeStoreFloor(100, 64, 5, 0);
    expect(floor.events).toBe(128);
    expect(floor.committed).toBe(128);
  });
});
