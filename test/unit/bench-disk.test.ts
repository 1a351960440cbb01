import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import { probeDisk } from "../../bench/lib/disk.js";

const probeDirs = () => readdirSync(tmpdir()).filter((f) => f.startsWith("relaychat-disk-"));

describe("probeDisk", () => {
  it("times real fdatasyncs in the temp dir, in order, and leaves nothing behind", () => {
    const before = probeDirs().length;
    const p = probeDisk("one-to-one/ours", 20);
    expect(p.before).toBe("one-to-one/ours");
    expect(p.p50Us).toBeGreaterThan(0);
    expect(p.p99Us).toBeGreaterThanOrEqual(p.p50Us);
    expect(p.maxUs).toBeGreaterThanOrEqual(p.p99Us);
    expect(probeDirs()).toHaveLength(before);
  });
});
