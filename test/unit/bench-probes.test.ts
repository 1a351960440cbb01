import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import { probeCpu } from "../../bench/lib/cpu.js";
import { probeDisk } from "../../bench/lib/disk.js";
import {
  cpuUsOf,
  machineQuiet,
  mainThreadCpuUsOf,
  mainThreadWaitUsOf,
} from "../../bench/lib/procs.js";

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

describe("mainThreadCpuUsOf", () => {
  const spinFor = async (code: string) => {
    const child = spawn(process.execPath, ["-e", code], { stdio: "ignore" });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      return { main: mainThreadCpuUsOf(child.pid!), all: cpuUsOf(child.pid!) };
    } finally {
      child.kill("SIGKILL");
    }
  };

  it("reads the main thread alone: a busy worker thread counts for the process, not for it", async () => {
    const worker = await spinFor(
      "const { Worker } = require('node:worker_threads'); new Worker('for (;;) {}', { eval: true }); setInterval(() => {}, 1000);",
    );
    expect(worker.all).toBeGreaterThan(500_000);
    expect(worker.main).toBeLessThan(worker.all / 2);
    const main = await spinFor("for (;;) {}");
    expect(main.main).toBeGreaterThan(500_000);
    expect(main.main).toBeLessThanOrEqual(main.all);
    expect(main.main).toBeGreaterThan(main.all / 2);
  });
});

describe("mainThreadWaitUsOf", () => {
  it("counts time runnable without a CPU, not time asleep", async () => {
    // Twice as many spinning processes as cores: each waits for a CPU about half the time.
    const spinners = Array.from({ length: cpus().length * 2 }, () =>
      spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }),
    );
    // It says when it has started: a starting process is runnable, and on a
    // busy machine its start-up would spill into the window measured.
    const sleeper = spawn(
      process.execPath,
      ["-e", 'process.stdout.write("up\\n"); setInterval(() => {}, 1000)'],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    try {
      await new Promise((r) => sleeper.stdout!.once("data", r));
      await new Promise((r) => setTimeout(r, 300));
      const spin0 = mainThreadWaitUsOf(spinners[0]!.pid!);
      const sleep0 = mainThreadWaitUsOf(sleeper.pid!);
      await new Promise((r) => setTimeout(r, 1500));
      const spun = mainThreadWaitUsOf(spinners[0]!.pid!) - spin0;
      const slept = mainThreadWaitUsOf(sleeper.pid!) - sleep0;
      expect(spun).toBeGreaterThan(200_000);
      // Relative, not absolute: other test files share the machine, and a woken
      // sleeper waits longer on a busy one, but never about as long as a spinner.
      expect(slept, `sleeper ${slept} µs runnable, spinner ${spun} µs`).toBeLessThan(spun / 4);
    } finally {
      for (const s of spinners) s.kill("SIGKILL");
      sleeper.kill("SIGKILL");
    }
  });
});
