import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import { probeCpu } from "../../bench/lib/cpu.js";
import { probeDisk } from "../../bench/lib/disk.js";
import { machineQuiet } from "../../bench/lib/procs.js";

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

describe("probeCpu", () => {
  it("times real rounds of its work: the median fits the wall time they took together", () => {
    const t = performance.now();
    const p = probeCpu("one-to-one/ours", 5);
    const wall = performance.now() - t;
    expect(p.before).toBe("one-to-one/ours");
    expect(p.medianMs).toBeGreaterThan(0);
    expect(p.maxMs).toBeGreaterThanOrEqual(p.medianMs);
    // Three of five rounds took at least the median, and the max is one of them.
    expect(3 * p.medianMs).toBeLessThanOrEqual(wall + 1);
    expect(p.maxMs + 2 * p.medianMs).toBeLessThanOrEqual(wall + 1);
  });
});

describe("machineQuiet", () => {
  it("waits while the machine is busy, up to its limit, and no longer once it is quiet", async () => {
    // One core spinning keeps the machine busier than just under one core's share of it.
    const spinner = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" });
    try {
      const busyPct = Math.floor(100 / cpus().length) - 10;
      const waited = await machineQuiet(busyPct, 200, 1000);
      expect(waited).toBeGreaterThanOrEqual(1000);
    } finally {
      spinner.kill("SIGKILL");
    }
    // Over 100% is never reached: quiet after the first window.
    const quiet = await machineQuiet(101, 200, 5000);
    expect(quiet).toBeGreaterThanOrEqual(190);
    expect(quiet).toBeLessThan(1000);
  });
});
