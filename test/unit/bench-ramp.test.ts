import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import {
  type BenchContext,
  type LoadWorker,
  quickScale,
  ramp,
  rateStep,
} from "../../bench/lib/context.js";
import {
  encode,
  newHistogram,
  percentileCountingMissing,
  record,
} from "../../bench/lib/histogram.js";
import type { BenchRun } from "../../bench/lib/results.js";
import type { StepStats } from "../../bench/worker.js";

/**
 * A load worker whose steps report the latency `latencyMs(rate, attempt)`
 * gives, attempt counting from 1 per rate; it records the step ids it ran.
 */
function scriptedWorker(
  latencyMs: (rate: number, attempt: number) => number,
  /** Fraction of a step's messages that never arrive. */
  lost: (rate: number) => number = () => 0,
) {
  const ran: { step: number; rate: number; at: number; ms: number }[] = [];
  const ops: string[] = [];
  const attempts = new Map<number, number>();
  const byStep = new Map<number, StepStats>();
  const worker: LoadWorker = {
    pid: 0,
    batch: false,
    stop: async () => undefined,
    rpc: async <T>(op: string, args?: unknown): Promise<T> => {
      const a = args as { step: number; ratePerSec: number; durationMs: number };
      ops.push(op);
      if (op === "run") {
        ran.push({ step: a.step, rate: a.ratePerSec, at: Date.now(), ms: a.durationMs });
        const attempt = (attempts.get(a.ratePerSec) ?? 0) + 1;
        attempts.set(a.ratePerSec, attempt);
        const sent = Math.round((a.ratePerSec * a.durationMs) / 1000);
        const h = newHistogram();
        const delivered = sent - Math.round(sent * lost(a.ratePerSec));
        for (let i = 0; i < delivered; i++) record(h, latencyMs(a.ratePerSec, attempt) * 1000);
        const stats = { sent, acked: sent, delivered, ack: encode(h), deliver: encode(h) };
        byStep.set(a.step, stats);
        return stats as T;
      }
      return byStep.get(a.step) as T;
    },
  };
  return { worker, ran, ops };
}

const contextWith = (worker: LoadWorker): BenchContext => ({
  scale: { ...quickScale, stepMs: 200, graceMs: 0 },
  quick: true,
  workers: [worker],
  run: {} as BenchRun,
  progress: () => undefined,
  log: () => undefined,
});

describe("ramp", () => {
  it("runs a step over the SLO once more and keeps the second attempt", async () => {
    // 200/s stalls once; 300/s is saturated on both attempts.
    const { worker, ran } = scriptedWorker((rate, attempt) =>
      rate === 300 || (rate === 200 && attempt === 1) ? 120 : 5,
    );
    const result = await ramp(contextWith(worker), "ours", [100, 200, 300, 400], 1, true, 100, 0);
    expect(result.sustainedPerSec).toBe(200);
    expect(result.steps.map((s) => [s.offeredPerSec, s.withinSlo])).toEqual([
      [100, true],
      [200, true],
      [300, false],
    ]);
    expect(result.steps[0]!.retriedAfterP99).toBeUndefined();
    expect(result.steps[1]!.retriedAfterP99).toBeGreaterThan(100_000);
    expect(result.steps[2]!.retriedAfterP99).toBeGreaterThan(100_000);
    // Warm-up at half the first rate; 100/s is far under the SLO, so 200/s is skipped until
    // 300/s misses twice; then 200/s runs (twice: it stalls once). 400/s never runs.
    expect(ran.map(({ step, rate }) => ({ step, rate }))).toEqual([
      { step: 99, rate: 50 },
      { step: 100, rate: 100 },
      { step: 102, rate: 300 },
      { step: 152, rate: 300 },
      { step: 101, rate: 200 },
      { step: 151, rate: 200 },
    ]);
  });

  it("warms up unrecorded, in a full run at the second rate for 3 s", async () => {
    const full = scriptedWorker(() => 5);
    const ctx = { ...contextWith(full.worker), quick: false };
    const result = await ramp(ctx, "ours", [100, 200, 300], 1, true, 100, 0);
    expect(full.ran[0]).toMatchObject({ step: 99, rate: 200, ms: 3000 });
    expect(result.steps[0]!.offeredPerSec).toBe(100);
    // The steps themselves keep the scale's length.
    expect(full.ran.slice(1).every((r) => r.ms === ctx.scale.stepMs)).toBe(true);
    // A quick run warms up briefly at half the first rate.
    const quick = scriptedWorker(() => 5);
    await ramp(contextWith(quick.worker), "ours", [100, 200, 300], 1, true, 100, 0);
    expect(quick.ran[0]).toMatchObject({ step: 99, rate: 50, ms: 500 });
  });

  it("strides over rates only while far under the SLO, and never over the last", async () => {
    // 5 ms up to 400/s, 20 ms (over a quarter of the SLO) at 500/s and 600/s, saturated from 700/s.
    const latency = (rate: number) => (rate <= 400 ? 5 : rate <= 600 ? 20 : 120);
    const { worker, ran } = scriptedWorker(latency);
    const rates = [100, 200, 300, 400, 500, 600, 700, 800];
    const result = await ramp(contextWith(worker), "ours", rates, 1, true, 100, 0);
    expect(result.sustainedPerSec).toBe(600);
    expect(result.steps.map((s) => s.offeredPerSec)).toEqual([100, 300, 500, 600, 700]);
    expect(ran.map((r) => r.rate)).toEqual([50, 100, 300, 500, 600, 700, 700]);

    const top = scriptedWorker(() => 5);
    const all = await ramp(contextWith(top.worker), "ours", [100, 200, 300, 400], 1, true, 100, 0);
    expect(all.steps.map((s) => s.offeredPerSec)).toEqual([100, 300, 400]);
    expect(all.sustainedPerSec).toBe(400);
    expect(all.notes?.[0]).toMatch(/ended before this target saturated/);

    const walk = scriptedWorker(() => 5);
    const ctx = contextWith(walk.worker);
    ctx.scale = { ...ctx.scale, strideHeadroom: 0 };
    const every = await ramp(ctx, "ours", [100, 200, 300, 400], 1, true, 100, 0);
    expect(every.steps.map((s) => s.offeredPerSec)).toEqual([100, 200, 300, 400]);
  });

  it("counts messages never delivered as later than the SLO, however fast the rest were", async () => {
    // Every delivered message takes 5 ms; 0.5% go missing at 200/s, 2% from 300/s.
    const { worker } = scriptedWorker(
      () => 5,
      (rate) => (rate === 200 ? 0.005 : rate >= 300 ? 0.02 : 0),
    );
    const ctx = contextWith(worker);
    ctx.scale = { ...ctx.scale, strideHeadroom: 0, stepMs: 1000 };
    const result = await ramp(ctx, "ours", [100, 200, 300, 400], 1, true, 100, 0);
    expect(result.steps.map((s) => [s.offeredPerSec, s.missing, s.withinSlo])).toEqual([
      [100, 0, true],
      [200, 1, true],
      [300, 6, false],
    ]);
    expect(result.sustainedPerSec).toBe(200);
  });

  it("ends a step's wait once every message is acked and delivered, and waits it out otherwise", async () => {
    const complete = scriptedWorker(() => 5);
    const ctx = contextWith(complete.worker);
    ctx.scale = { ...ctx.scale, graceMs: 60_000 };
    const done = await rateStep(ctx, 1, 100, 1, true);
    expect(done.missing).toBe(0);
    // One look at the counts, then the histograms: no wait for the rest of the minute.
    expect(complete.ops).toEqual(["run", "counts", "collect"]);

    const lossy = scriptedWorker(
      () => 5,
      () => 0.05,
    );
    const lossyCtx = contextWith(lossy.worker);
    lossyCtx.scale = { ...lossyCtx.scale, graceMs: 300 };
    const t0 = Date.now();
    const short = await rateStep(lossyCtx, 1, 100, 1, true);
    expect(short.missing).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(lossy.ops.filter((op) => op === "counts").length).toBeGreaterThan(1);
    expect(lossy.ops.at(-1)).toBe("collect");
  });

  it("ends at the skipped rate when it misses too", async () => {
    const { worker } = scriptedWorker((rate) => (rate >= 200 ? 120 : 5));
    const result = await ramp(contextWith(worker), "ours", [100, 200, 300, 400], 1, true, 100, 0);
    expect(result.sustainedPerSec).toBe(100);
    expect(result.steps.map((s) => [s.offeredPerSec, s.withinSlo])).toEqual([
      [100, true],
      [200, false],
      [300, false],
    ]);
  });

  it("lets a busy target drain before it runs a missed or skipped rate again", async () => {
    // A stand-in target that stays busy for 2.5 s (longer than the quick drain pause), then idles.
    const target = spawn(
      process.execPath,
      [
        "-e",
        "const end = Date.now() + 2500; while (Date.now() < end); console.log(end); setTimeout(() => {}, 60_000);",
      ],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    try {
      const busyUntil = new Promise<number>((resolve) =>
        target.stdout.once("data", (d: Buffer) => resolve(Number(String(d).trim()))),
      );
      const { worker, ran } = scriptedWorker((rate) => (rate >= 200 ? 120 : 5));
      await ramp(contextWith(worker), "ours", [100, 200], 1, true, 100, target.pid!);
      const end = await busyUntil;
      // 100/s passes; 200/s misses, and its second attempt waits for the target to go idle.
      expect(ran.map((r) => r.rate)).toEqual([50, 100, 200, 200]);
      expect(ran[3]!.at).toBeGreaterThanOrEqual(end);
    } finally {
      target.kill();
    }
  });
});

describe("percentileCountingMissing", () => {
  it("ranks the messages not delivered after every delivered one", () => {
    const h = newHistogram();
    for (let ms = 1; ms <= 995; ms++) record(h, ms * 1000);
    // The 990th of 1,000 is the 990th delivered; of 995 it is the 985th (p99 of 995 delivered).
    expect(percentileCountingMissing(h, 1000, 99) / 1000).toBeCloseTo(990, -1);
    expect(percentileCountingMissing(h, 995, 99) / 1000).toBeCloseTo(985, -1);
    // With more than 1% missing, p99 is never reached.
    expect(percentileCountingMissing(h, 1010, 99)).toBe(Number.POSITIVE_INFINITY);
    expect(percentileCountingMissing(newHistogram(), 10, 50)).toBe(Number.POSITIVE_INFINITY);
  });
});
