import { isMessage, toBinary } from "@bufbuild/protobuf";
import { TimestampSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { timestampAt } from "../../lib/timestamps.js";

describe("timestampAt", () => {
  it("equals timestampFromMs at, before and after the epoch and on second boundaries", () => {
    for (const ms of [0, 1, 999, 1000, 1001, -1, -999, -1000, -1001, 1_733_400_000_123, 2 ** 41]) {
      const t = timestampAt(ms);
      const reference = timestampFromMs(ms);
      expect(t, String(ms)).toStrictEqual(reference);
      expect(toBinary(TimestampSchema, t)).toEqual(toBinary(TimestampSchema, reference));
      expect(t.nanos).toBeGreaterThanOrEqual(0);
      expect(t.nanos).toBeLessThan(1_000_000_000);
      expect(isMessage(t, TimestampSchema)).toBe(true);
    }
  });
});
