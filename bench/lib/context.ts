import { execFileSync } from "node:child_process";
import { join } from "node:path";
import type { ClientSpec, OursTransport, Route, StepStats, TargetSpec } from "../worker.js";
import { mergeEncoded, percentileCountingMissing, summarize } from "./histogram.js";
import {
  cpuUsOf,
  forkTs,
  mainThreadCpuUsOf,
  mainThreadWaitUsOf,
  makeRpc,
  waitExit,
} from "./procs.js";
import type { BenchRun, RampResult, RateStep, TargetName } from "./results.js";

export type Rpc = <T>(op: string, args?: unknown) => Promise<T>;

export interface LoadWorker {
  pid: number;
  /** Whether it runs under SCHED_BATCH (needs `chrt`, from util-linux). */
  batch: boolean;
  rpc: Rpc;
  stop(): Promise<void>;
}

/** 1:1 "sustained" bound: p99 send→deliver (the 50 ms). */
export const oneToOneSloUs = 50_000;
/**
 * Group fan-out "sustained" bound. The issue sets none; writing one message to
 * 500 sockets takes the raw relay's own load generator ~35 ms at p99 on this
 * box, so 50 ms would measure the generator, not the server.
 */
export const groupSloUs = 250_000;

/** Sizes of everything, so --quick is the same bench at smoke scale. */
export interface Scale {
  pairs: number;
  rates: number[];
  /**
   * A ramp step with p99 at most this fraction of the SLO (and nothing
   * missing) lets the ramp skip the next rate; 0 walks every rate.
   */
  strideHeadroom: number;
  stepMs: number;
  graceMs: number;
  groupSize: number;
  groups: number;
  groupSendersPerGroup: number;
  groupRates: number[];
  idleSessions: number;
  /** Idle sessions as gRPC streams over shared HTTP/2 connections (ours). */
  idleStreams: number;
  /** Idle sessions as gRPC Subscribe calls over shared HTTP/2 connections (ours). */
  idleSubscribeStreams: number;
  idleStreamsPerConnection: number;
  idleHoldMs: number;
  stormClients: number;
  stormGroupSize: number;
  stormMissed: number;
  historyEvents: number;
  historyGroups: number;
  historyGroupSize: number;
  historyRecent: number;
  historySeconds: number;
}

export const fullScale: Scale = {
  pairs: 250,
  // Fine steps where the durable systems saturate, wider ones up to the relay's ceiling.
  rates: [
    500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000, 7000, 8500, 10_000, 12_000,
    14_000, 17_000, 20_000, 24_000, 28_000, 33_000, 40_000, 48_000, 57_000, 68_000, 80_000, 96_000,
    115_000,
  ],
  strideHeadroom: 0.25,
  stepMs: 3000,
  graceMs: 1000,
  groupSize: 500,
  groups: 1,
  groupSendersPerGroup: 10,
  groupRates: [2, 5, 10, 20, 40, 60, 80, 100, 120, 140, 160, 200, 240, 280, 320, 400, 560],
  // One process may hold 20,000 descriptors here (hard limit); leave room for files and the store.
  idleSessions: 19_000,
  idleStreams: 100_000,
  // Enough to read RSS per call; the 100,000 target is the Session streams'.
  idleSubscribeStreams: 20_000,
  // Under the edge's default HTTP/2 limit of 128 concurrent streams per connection.
  idleStreamsPerConnection: 100,
  idleHoldMs: 26_000,
  stormClients: 10_000,
  stormGroupSize: 500,
  stormMissed: 5,
  historyEvents: 5000,
  historyGroups: 10,
  historyGroupSize: 100,
  historyRecent: 50,
  historySeconds: 8,
};

export const quickScale: Scale = {
  pairs: 40,
  rates: [300, 900],
  strideHeadroom: 0.25,
  stepMs: 1000,
  graceMs: 400,
  groupSize: 50,
  groups: 1,
  groupSendersPerGroup: 4,
  groupRates: [20, 60],
  idleSessions: 400,
  idleStreams: 400,
  idleSubscribeStreams: 400,
  idleStreamsPerConnection: 100,
  idleHoldMs: 500,
  stormClients: 400,
  stormGroupSize: 200,
  stormMissed: 3,
  historyEvents: 300,
  historyGroups: 3,
  historyGroupSize: 20,
  historyRecent: 20,
  historySeconds: 1,
};

export interface BenchContext {
  scale: Scale;
  quick: boolean;
  workers: LoadWorker[];
  run: BenchRun;
  progress(line: string): void;
  log(line: string): void;
  /** Checkout to measure instead of this one (the "before" of a profiling fix). */
  serverRoot?: string;
  /** Where the server under test writes V8 CPU profiles (--cpu-prof). */
  cpuProfileDir?: string;
}

/**
 * SCHED_BATCH: the generator keeps its fair share of the cores but no longer
 * preempts the system under test each time a reply wakes it (on loopback, a
 * write to a client wakes the generator at once), which no load generator on
 * a machine of its own would do. It applies to every system alike.
 */
function batchPolicy(pid: number): boolean {
  try {
    execFileSync("chrt", ["--batch", "--all-tasks", "--pid", "0", String(pid)], {
      stdio: "ignore",
    });
    return true;
  } catch {
    return false;
  }
}

/** Starts the load-generator processes. */
export async function startWorkers(n: number): Promise<LoadWorker[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const child = forkTs(join(import.meta.dirname, "../worker.ts"));
      const rpc = makeRpc(child);
      await new Promise<void>((r) => child.once("spawn", () => r()));
      // Answered once the worker has loaded: its start-up must not overlap the first scenario.
      await rpc("status");
      return {
        pid: child.pid ?? 0,
        batch: child.pid !== undefined && batchPolicy(child.pid),
        rpc,
        async stop() {
          child.disconnect();
          await waitExit(child, 3000);
        },
      };
    }),
  );
}

interface Opened {
  opened: number;
  failed: number;
  errors: string[];
  ms: number;
}

/** Runs one open op on every worker with its share of the clients, and sums what they opened. */
async function openAcross(
  ctx: BenchContext,
  op: "open" | "openStreams",
  per: ClientSpec[][],
  args: Record<string, unknown>,
): Promise<Opened> {
  const res = await Promise.all(
    ctx.workers.map((w, i) => w.rpc<Opened>(op, { ...args, clients: per[i] })),
  );
  return {
    opened: res.reduce((a, r) => a + r.opened, 0),
    failed: res.reduce((a, r) => a + r.failed, 0),
    errors: res.flatMap((r) => r.errors),
    ms: Math.max(...res.map((r) => r.ms)),
  };
}

/** Opens `clients` spread round-robin over the workers (or by `place`). */
export async function openClients(
  ctx: BenchContext,
  target: TargetSpec,
  clients: ClientSpec[],
  place: (c: ClientSpec) => number = (c) => c.index % ctx.workers.length,
  concurrency = 64,
  transport: OursTransport = "websocket",
) {
  const per = ctx.workers.map(() => [] as ClientSpec[]);
  for (const c of clients) per[place(c) % ctx.workers.length]!.push(c);
  return openAcross(ctx, "open", per, { target, concurrency, transport });
}

/**
 * Opens ours clients as gRPC Session streams (or server-streaming Subscribe
 * calls), `perConnection` to an HTTP/2 connection.
 */
export async function openStreams(
  ctx: BenchContext,
  target: TargetSpec,
  clients: ClientSpec[],
  perConnection: number,
  concurrency = 64,
  method: "session" | "subscribe" | "connect-subscribe" = "session",
) {
  // Whole connections per worker, so no connection is split across processes.
  const per = ctx.workers.map(() => [] as ClientSpec[]);
  clients.forEach((c, i) => {
    per[Math.floor(i / perConnection) % ctx.workers.length]!.push(c);
  });
  return openAcross(ctx, "openStreams", per, { target, perConnection, concurrency, method });
}

export async function closeClients(ctx: BenchContext) {
  await Promise.all(ctx.workers.map((w) => w.rpc("closeAll")));
}

/**
 * Runs `work` and measures the CPU the target process (`targetPid`; 0 for
 * none, which reads 0; several processes count together and have no one
 * main thread), its main thread, and the load-generator processes
 * used meanwhile, in % of one core over the wall time; and how long the
 * target's main thread, and each generator's on average, waited for a CPU
 * while runnable, in % of the wall time.
 */
export async function cpuDuring<T>(
  ctx: BenchContext,
  targetPid: number | number[],
  work: () => Promise<T>,
): Promise<{
  value: T;
  targetCpuPct: number;
  mainThreadCpuPct: number;
  mainThreadWaitPct: number;
  loadGenCpuPct: number;
  loadGenWaitPct: number;
}> {
  const genCpu = () => ctx.workers.reduce((a, w) => a + cpuUsOf(w.pid), 0);
  const genWait = () =>
    ctx.workers.reduce((a, w) => a + mainThreadWaitUsOf(w.pid), 0) /
    Math.max(1, ctx.workers.length);
  // Several processes (a split deployment) count together; their main threads are not one event loop.
  const pids = Array.isArray(targetPid) ? targetPid : targetPid ? [targetPid] : [];
  const single = pids.length === 1 ? pids[0]! : 0;
  const targetCpu = () => pids.reduce((a, p) => a + cpuUsOf(p), 0);
  const cpu0 = targetCpu();
  const main0 = single ? mainThreadCpuUsOf(single) : 0;
  const mainWait0 = single ? mainThreadWaitUsOf(single) : 0;
  const gen0 = genCpu();
  const genWait0 = genWait();
  const t0 = Date.now();
  const value = await work();
  const wallUs = Math.max(1, (Date.now() - t0) * 1000);
  const pct = (us: number) => Math.round((us / wallUs) * 100);
  return {
    value,
    targetCpuPct: pids.length > 0 ? pct(targetCpu() - cpu0) : 0,
    mainThreadCpuPct: single ? pct(mainThreadCpuUsOf(single) - main0) : 0,
    mainThreadWaitPct: single ? pct(mainThreadWaitUsOf(single) - mainWait0) : 0,
    loadGenCpuPct: pct(genCpu() - gen0),
    loadGenWaitPct: pct(genWait() - genWait0),
  };
}

/**
 * One open-loop step on every worker at once. `fanout` is deliveries per
 * message; the SLO is p99 send→deliver ≤ sloUs over every message the step
 * should have delivered, one not delivered by the end of its grace counting
 * as later than that. The grace (`scale.graceMs`) ends early once every
 * message is acked (when `hasAck`) and delivered. CPU is read over the
 * sending alone, so it is the load the step's rate puts on each process;
 * `eventLoop` (a Node target) reads its main thread's share too.
 */
export async function rateStep(
  ctx: BenchContext,
  step: number,
  ratePerSec: number,
  fanout: number,
  hasAck: boolean,
  sloUs = 50_000,
  targetPid: number | number[] = 0,
  eventLoop = false,
): Promise<RateStep> {
  const { stepMs, graceMs } = ctx.scale;
  const share = ratePerSec / ctx.workers.length;
  const {
    value: runs,
    targetCpuPct,
    mainThreadCpuPct,
    mainThreadWaitPct,
    loadGenCpuPct,
    loadGenWaitPct,
  } = await cpuDuring(ctx, targetPid, () =>
    Promise.all(
      ctx.workers.map((w) =>
        w.rpc<{ sent: number }>("run", { step, ratePerSec: share, durationMs: stepMs }),
      ),
    ),
  );
  const sent = runs.reduce((a, r) => a + r.sent, 0);
  const expected = sent * fanout;
  // Deliveries to members held by other workers land there: poll every worker's counts.
  const graceEnd = Date.now() + graceMs;
  while (Date.now() < graceEnd) {
    const counts = await Promise.all(
      ctx.workers.map((w) => w.rpc<{ acked: number; delivered: number }>("counts", { step })),
    );
    const acked = counts.reduce((a, c) => a + c.acked, 0);
    const delivered = counts.reduce((a, c) => a + c.delivered, 0);
    if (delivered >= expected && (!hasAck || acked >= sent)) break;
    await new Promise((r) => setTimeout(r, Math.min(graceDrainPollMs, graceEnd - Date.now())));
  }
  const all = await Promise.all(ctx.workers.map((w) => w.rpc<StepStats>("collect", { step })));
  const acked = all.reduce((a, r) => a + r.acked, 0);
  const delivered = all.reduce((a, r) => a + r.delivered, 0);
  const deliverHistogram = mergeEncoded(all.map((r) => r.deliver));
  const deliver = summarize(deliverHistogram);
  const ack = summarize(mergeEncoded(all.map((r) => r.ack)));
  const seconds = stepMs / 1000;
  const result: RateStep = {
    offeredPerSec: ratePerSec,
    achievedPerSec: Math.round(Math.min(sent, hasAck ? acked : delivered / fanout) / seconds),
    deliveriesPerSec: Math.round(delivered / seconds),
    deliver,
    missing: Math.max(0, expected - delivered),
    // A message still missing when the grace period ended counts as later than the bound.
    withinSlo: percentileCountingMissing(deliverHistogram, expected, 99) <= sloUs,
    loadGenCpuPct,
  };
  const measured = Array.isArray(targetPid) ? targetPid.length > 0 : targetPid !== 0;
  if (measured) result.targetCpuPct = targetCpuPct;
  if (measured && eventLoop) {
    result.eventLoopCpuPct = mainThreadCpuPct;
    result.eventLoopWaitPct = mainThreadWaitPct;
  }
  result.loadGenWaitPct = loadGenWaitPct;
  if (hasAck) result.ack = ack;
  return result;
}

/** How often a step's grace checks whether everything arrived. */
const graceDrainPollMs = 20;

/** CPU (% of a core) under which a target counts as idle again after a missed step. */
const idleCpuPct = 20;
/** The longest wait for a target to drain its backlog after a missed step. */
const settleMaxMs = 30_000;

/** Step ids of second attempts, above those of first attempts (fewer than this many rates). */
const retryOffset = 50;

/**
 * The unrecorded warm-up before a ramp's first step (the JIT, connection
 * buffers and caches, as on a server that has run a while): in a full run
 * 3 s at the second rate, enough messages for the first step's CPU to read
 * as later steps at that rate do (2 s at half the first rate left it about
 * half again as high); in a quick run 0.5 s at half the first rate.
 */
export function warmUp(quick: boolean, rates: readonly number[]) {
  const first = rates[0] ?? 0;
  return quick
    ? { ms: 500, graceMs: 200, rate: first / 2, at: "half-first" as const }
    : { ms: 3000, graceMs: 500, rate: rates[1] ?? first, at: "second" as const };
}

/**
 * Ramps the rate until a step misses the SLO twice in a row; returns the
 * step that stands at each rate that ran, in rate order.
 *
 * While a step is far under the SLO (p99 at most `scale.strideHeadroom` of
 * it, everything delivered), the ramp skips the next rate. When the step
 * after a skipped rate misses, the skipped rate runs once the target has
 * drained its backlog, and the ramp ends there; so `sustainedPerSec` is the
 * one a walk over every rate would find on a system whose latency rises with
 * load, in fewer steps.
 */
export async function ramp(
  ctx: BenchContext,
  name: TargetName,
  rates: number[],
  fanout: number,
  hasAck: boolean,
  stepBase: number,
  targetPid: number | number[],
  sloUs = oneToOneSloUs,
) {
  if (rates.length > retryOffset) throw new Error(`ramp: at most ${retryOffset} rates`);
  // Ours and the relay are Node processes: their main thread is the event loop
  // (not so for several processes together).
  const eventLoop = (name === "ours" || name === "relay") && !Array.isArray(targetPid);
  const pids = Array.isArray(targetPid) ? targetPid : targetPid ? [targetPid] : [];
  const targetCpu = () => pids.reduce((a, p) => a + cpuUsOf(p), 0);
  const steps: RateStep[] = [];
  // Every step of this ramp, warm-up and retries included, measures alike.
  const stepAt = (id: number, rate: number) =>
    rateStep(ctx, id, rate, fanout, hasAck, sloUs, targetPid, eventLoop);
  const warm = warmUp(ctx.quick, rates);
  const saved = ctx.scale;
  ctx.scale = { ...saved, stepMs: warm.ms, graceMs: warm.graceMs };
  ctx.progress(`${name}: warm-up`);
  await stepAt(stepBase - 1, warm.rate).finally(() => {
    ctx.scale = saved;
  });
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  // Before the next attempt at or below a missed rate, the backlog drains: at least
  // drainMs, then until the target's CPU is back under idleCpuPct (a queue that takes
  // seconds to empty would otherwise count against the next step).
  const drainMs = ctx.quick ? 500 : 2000;
  const settle = async () => {
    await pause(drainMs);
    const deadline = Date.now() + (ctx.quick ? 5000 : settleMaxMs);
    while (pids.length > 0 && Date.now() < deadline) {
      const cpu0 = targetCpu();
      const t0 = Date.now();
      await pause(300);
      const pct = ((targetCpu() - cpu0) / ((Date.now() - t0) * 1000)) * 100;
      if (pct < idleCpuPct) return;
    }
  };
  const logStep = (s: RateStep) =>
    ctx.log(
      `${name} @${s.offeredPerSec}/s${s.retriedAfterP99 === undefined ? "" : " (again)"}: achieved ${s.achievedPerSec}/s, deliver p50 ${(s.deliver.p50 / 1000).toFixed(1)} ms p99 ${(s.deliver.p99 / 1000).toFixed(1)} ms, missing ${s.missing}, cpu target ${s.targetCpuPct}% loadgen ${s.loadGenCpuPct}%${s.withinSlo ? "" : " (over SLO)"}`,
    );
  const runRate = async (i: number) => {
    const rate = rates[i]!;
    ctx.progress(`${name}: ${rate.toLocaleString()} msgs/s …`);
    let s = await stepAt(stepBase + i, rate);
    logStep(s);
    if (!s.withinSlo) {
      // One stall on a shared machine should not end the ramp: a step over the SLO runs once
      // more, after the backlog drained, and the second attempt stands (for every system alike).
      const firstP99 = s.deliver.p99;
      await settle();
      ctx.progress(`${name}: ${rate.toLocaleString()} msgs/s again …`);
      s = await stepAt(stepBase + retryOffset + i, rate);
      s.retriedAfterP99 = firstP99;
      logStep(s);
    }
    steps.push(s);
    return s;
  };
  let skipped: number | undefined;
  for (let i = 0; i < rates.length; ) {
    const s = await runRate(i);
    if (!s.withinSlo) {
      if (skipped === i - 1) {
        await settle();
        await runRate(i - 1);
      }
      break;
    }
    await pause(300);
    const farUnder =
      s.deliver.p99 <= sloUs * ctx.scale.strideHeadroom &&
      s.missing === 0 &&
      s.achievedPerSec >= 0.99 * s.offeredPerSec;
    skipped = farUnder && i + 2 < rates.length ? i + 1 : undefined;
    i += skipped === undefined ? 1 : 2;
  }
  steps.sort((a, b) => a.offeredPerSec - b.offeredPerSec);
  const best = steps.filter((s) => s.withinSlo).at(-1);
  const result: RampResult = {
    target: name,
    sustainedPerSec: best?.offeredPerSec ?? 0,
    sustainedDeliveriesPerSec: best?.deliveriesPerSec ?? 0,
    steps,
  };
  if (steps.every((s) => s.withinSlo)) {
    result.notes = ["every step met the SLO: the ramp ended before this target saturated"];
  }
  return result;
}

export async function setRoutes(ctx: BenchContext, routes: Route[]) {
  await Promise.all(ctx.workers.map((w) => w.rpc("setRoutes", { routes })));
}
