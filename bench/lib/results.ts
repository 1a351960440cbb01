import { existsSync, readFileSync } from "node:fs";

/**
 * The shape of one benchmark run, as written to `bench/results/<run>.json`
 * and read by the report generator. Latencies are microseconds.
 */

/** Percentiles of one latency distribution, in microseconds. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** The systems a scenario can drive, side by side. */
export type TargetName = "ours" | "relay" | "ejabberd-routing" | "ejabberd-archive";

/** One open-loop rate step of a ramp (1:1 chat, group fan-out). */
export interface RateStep {
  /** Messages per second the generator offered (the schedule). */
  offeredPerSec: number;
  /** Messages per second actually sent and acknowledged or delivered during the step. */
  achievedPerSec: number;
  /** Deliveries per second to recipients (1:1: one per message; groups: members - 1). */
  deliveriesPerSec: number;
  /** Intended-send-time → ack; absent where the target has no durable ack. */
  ack?: LatencySummary;
  /** Intended-send-time → delivery on the recipient's socket. */
  deliver: LatencySummary;
  /** Messages (or deliveries) still missing when the step's grace period ended. */
  missing: number;
  /** Whether the step met the SLO: p99 deliver ≤ limit, messages still missing counting as later. */
  withinSlo: boolean;
  /**
   * Set when this is a second attempt at the rate: the first went over the SLO with this
   * p99 send→deliver (µs).
   */
  retriedAfterP99?: number;
  /** CPU the system under test and the load generator used during the step, in % of one core. */
  targetCpuPct?: number;
  /** Of targetCpuPct, the main thread's: a Node system's event loop (ours and the relay only). */
  eventLoopCpuPct?: number;
  /** How long that event loop waited for a CPU while runnable, in % of the sending. */
  eventLoopWaitPct?: number;
  loadGenCpuPct?: number;
  /** How long each load generator's event loop waited for a CPU while runnable, on average. */
  loadGenWaitPct?: number;
}

export interface RampResult {
  target: TargetName;
  /** Highest offered rate whose step met the SLO; 0 when none did. */
  sustainedPerSec: number;
  /** Deliveries per second at that step. */
  sustainedDeliveriesPerSec: number;
  steps: RateStep[];
  notes?: string[];
}

export interface IdleResult {
  target: TargetName;
  /** Sessions the bench tried to open. */
  attempted: number;
  /** Sessions open and alive at the end of the hold. */
  held: number;
  /** Server RSS before the sessions and at the end of the hold, in bytes. */
  rssBaseBytes: number;
  rssHeldBytes: number;
  /** (rssHeld - rssBase) / held. */
  rssPerConnBytes: number;
  heartbeatIntervalMs: number;
  holdMs: number;
  /** Connection setup rate achieved (sessions/s until all were up). */
  connectPerSec: number;
  /**
   * The server's CPU during the hold, in % of one core: what keeping the
   * sessions alive costs (heartbeats, sweeps, timers), with nothing sent.
   */
  holdCpuPct?: number;
  /**
   * How sessions reached the server: one socket each (absent: WebSocket,
   * TCP or XMPP), or streams over shared HTTP/2 connections: bidi gRPC
   * Session streams, or server-streaming Subscribe calls in gRPC or in the
   * Connect protocol.
   */
  transport?: "grpc-streams" | "grpc-subscribe-streams" | "connect-subscribe-streams";
  /** HTTP/2 connections carrying the streams. */
  connections?: number;
  /** Sessions that failed to open, and unary heartbeat calls that failed during the hold. */
  openFailures?: number;
  heartbeatFailures?: number;
  notes?: string[];
}

export interface ReconnectResult {
  target: TargetName;
  clients: number;
  /** Events each client missed while disconnected. */
  missedPerClient: number;
  /** From the moment all reconnects start until the last client holds every event. */
  catchUpMs: number;
  /** Clients that had every event before the deadline. */
  caughtUp: number;
  lost: number;
  duplicated: number;
  /** Per-client time from its reconnect to holding every event. */
  perClient: LatencySummary;
}

/** CPU in % of one core while a history phase ran; absent in results from before it was measured. */
export interface PhaseCpu {
  targetCpuPct?: number;
  loadGenCpuPct?: number;
}

export interface HistoryResult {
  target: TargetName;
  /** GetHistory pages of `pageSize` events, walked backwards over one long conversation. */
  paging: {
    pageSize: number;
    pagesPerSec: number;
    eventsPerSec: number;
    latency: LatencySummary;
  } & PhaseCpu;
  /** Subscribe with cursors → sync batches → sync_complete, per resuming device. */
  resume: {
    conversationsPerClient: number;
    eventsPerResume: number;
    resumesPerSec: number;
    eventsPerSec: number;
    latency: LatencySummary;
  } & PhaseCpu;
}

/** The target's CPU time per event of a history phase, in µs; undefined when not measured. */
export function cpuUsPerEvent(phase: { eventsPerSec: number } & PhaseCpu): number | undefined {
  if (phase.targetCpuPct === undefined || phase.eventsPerSec <= 0) return undefined;
  return (phase.targetCpuPct * 10_000) / phase.eventsPerSec;
}

/**
 * Each number's median over runs of the same measurement (the mean of the
 * middle two for an even count), so one run's stall does not move the result.
 * Throws for no runs.
 */
export function medianEach<T extends { [K in keyof T]: number }>(runs: readonly T[]): T {
  if (runs.length === 0) throw new Error("medianEach: no runs");
  const out = { ...runs[0]! };
  for (const key of Object.keys(out) as (keyof T)[]) {
    const xs = runs.map((r) => r[key]).sort((a, b) => a - b);
    const mid = xs.length >> 1;
    out[key] = (xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2) as T[keyof T];
  }
  return out;
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  os: string;
  node: string;
  /** Open-file limit of the bench processes; it caps connections per process. */
  fdLimit: number;
  ejabberdVersion?: string;
  postgresVersion?: string;
}

/** Latency of a 4 KiB append plus fdatasync in the temp dir, taken just before `before` ran. */
export interface DiskProbe {
  /** "scenario/target", e.g. "one-to-one/ours". */
  before: string;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

/**
 * Wall-clock time one scenario took on one system: the wait for a quiet
 * machine, the probes, set-up and tear-down included.
 */
export interface ScenarioTiming {
  scenario: string;
  target: TargetName;
  /** Which form of the scenario, when it runs more than once on a system (e.g. "gRPC streams"). */
  variant?: string;
  ms: number;
}

/** Wall time of a fixed single-thread workload (bench/lib/cpu.ts), taken just before `before` ran. */
export interface CpuProbe {
  /** "scenario/target", e.g. "one-to-one/ours". */
  before: string;
  /** Median of the rounds, ms: lower is a faster CPU. */
  medianMs: number;
  maxMs: number;
}

/** The store's cheapest commit per event (bench/lib/store-floor.ts), taken before ours' 1:1 ramp. */
export interface StoreFloorProbe {
  eventsPerCommit: number;
  /** Events measured, after an unmeasured warm-up. */
  events: number;
  /** CPU of the commits (encoding and SQLite's work), µs per event. */
  cpuUsPerEvent: number;
  /** Message rows in the database afterwards, warm-up included. */
  committed: number;
}

/**
 * Ours' Cassandra store alone, saturated (bench/lib/cassandra-floor.ts),
 * probed after ours' 1:1 ramp on Cassandra, on the node it warmed up.
 */
export interface CassandraFloorProbe {
  /** Direct conversations committing side by side, each one message at a time. */
  conversations: number;
  /** Messages in the measured round. */
  events: number;
  /** The node's CPU, µs per message (absent when the node was started elsewhere). */
  cassandraCpuUsPerEvent?: number;
  /** The committing process's CPU (driver, encoding), µs per message. */
  serverCpuUsPerEvent: number;
  eventsPerSec: number;
  /** Message rows in the keyspace afterwards, warm-up included. */
  committed: number;
}

/** The CPU probe taken just before ours' 1:1 ramp. */
export const oursCpuProbe = (run: BenchRun): CpuProbe | undefined =>
  run.cpu?.find((d) => d.before === "one-to-one/ours");

/** The disk probe taken just before ours' 1:1 ramp, where every ack waits for a commit. */
export const oursDiskProbe = (run: BenchRun): DiskProbe | undefined =>
  run.disk?.find((d) => d.before === "one-to-one/ours");

/** One number measured before and after a profiling fix, with the same scenario and sizes. */
export interface ProfileMeasure {
  metric: string;
  unit: string;
  before: number;
  after: number;
  /** True for latency, CPU and memory, where less is better. */
  lowerIsBetter?: boolean;
}

/** Before/after of one profiling fix (or a group of related ones). */
export interface ProfileFix {
  title: string;
  detail: string;
  /** How the numbers were taken: scenario, sizes, runs. */
  method: string;
  measures: ProfileMeasure[];
}

export interface BenchRun {
  startedAt: string;
  durationMs: number;
  mode: "full" | "quick";
  gitCommit: string;
  machine: MachineInfo;
  /** The disk's commit latency before each scenario and system (absent in older results). */
  disk?: DiskProbe[];
  /** The CPU's speed before each scenario and system (absent in older results). */
  cpu?: CpuProbe[];
  /** The store's floor per event, probed before ours' 1:1 ramp (absent in older results). */
  storeFloor?: StoreFloorProbe;
  /** The Cassandra store's cost per message, probed after ours' ramp on it (absent in older results). */
  cassandraFloor?: CassandraFloorProbe;
  /** Bench-only server settings that differ from production defaults, and why. */
  settings: Record<string, string>;
  /**
   * How long each ramp step sends, and then waits at most for late acks and
   * deliveries. `earlyEnd`: the wait ended once everything was in, and CPU
   * was read over the sending alone; older results waited the whole grace and
   * read CPU over sending and wait together (the same load about a quarter lower).
   */
  rampStep?: {
    sendMs: number;
    graceMs: number;
    earlyEnd?: boolean;
    /** The unrecorded warm-up before each ramp; absent in older results (2 s at half the first rate). */
    warmUp?: { ms: number; at: "second" | "half-first" };
  };
  /**
   * Whether each idle run opened its sessions while the run before held its
   * own (on other load workers); absent in older results, whose runs
   * followed one another.
   */
  idleOverlapped?: boolean;
  oneToOne: RampResult[];
  /**
   * 1:1 for ours again with every client on a gRPC Session stream over an
   * HTTP/2 connection of its own, as a native app connects (absent in older results).
   */
  oneToOneGrpc?: RampResult[];
  /**
   * 1:1 for ours again as web apps' Connect clients send: a Connect-protocol
   * Subscribe call and a unary Connect Send call per message, on an HTTP/2
   * connection of each client's own (absent in older results).
   */
  oneToOneConnect?: RampResult[];
  /**
   * 1:1 for ours again as a split deployment: a core and two edge processes
   * sharing soft state in Redis, the members of each pair on different edges
   * (absent in older results).
   */
  oneToOneSplit?: RampResult[];
  /**
   * 1:1 for ours again with its events and metadata in a single-node
   * Cassandra on the same machine (absent in older results).
   */
  oneToOneCassandra?: RampResult[];
  /**
   * 1:1 for ours again with its message log in a standalone Pulsar on the
   * same machine, events in SQLite (absent in older results).
   */
  oneToOnePulsar?: RampResult[];
  /** sloP99Us: the p99 send→deliver bound that "sustained" uses for fan-out. */
  groupFanout: { groupSize: number; groups: number; sloP99Us: number; results: RampResult[] };
  idle: IdleResult[];
  reconnect: ReconnectResult[];
  history: HistoryResult[];
  /** How long each scenario took on each system, in the order they ran (absent in older results). */
  timings?: ScenarioTiming[];
  /** Scenario/target pairs that could not run, with the reason. */
  skipped: { scenario: string; target: TargetName; reason: string }[];
}

/** A full run's headline numbers, kept across runs so the report can show how they move. */
export interface RunDigest {
  startedAt: string;
  gitCommit: string;
  durationMs: number;
  /** 1:1 sustained msgs/s, by system. */
  oneToOne: Partial<Record<TargetName, number>>;
  /** Group fan-out sustained deliveries/s, by system. */
  group: Partial<Record<TargetName, number>>;
  /** Reconnect storm: ms until every client caught up. */
  stormMs?: number;
  /** p99 of the disk probe just before ours' 1:1 ramp, in µs. */
  fsyncP99UsBeforeOurs?: number;
  /** The CPU probe's median just before ours' 1:1 ramp, in ms. */
  cpuProbeMsBeforeOurs?: number;
}

export function digestOf(run: BenchRun): RunDigest {
  const bySystem = (results: RampResult[], key: "sustainedPerSec" | "sustainedDeliveriesPerSec") =>
    Object.fromEntries(results.map((r) => [r.target, r[key]]));
  const storm = run.reconnect[0];
  const disk = oursDiskProbe(run);
  const cpu = oursCpuProbe(run);
  return {
    startedAt: run.startedAt,
    gitCommit: run.gitCommit,
    durationMs: run.durationMs,
    oneToOne: bySystem(run.oneToOne, "sustainedPerSec"),
    group: bySystem(run.groupFanout.results, "sustainedDeliveriesPerSec"),
    ...(storm ? { stormMs: storm.catchUpMs } : {}),
    ...(disk ? { fsyncP99UsBeforeOurs: disk.p99Us } : {}),
    ...(cpu ? { cpuProbeMsBeforeOurs: cpu.medianMs } : {}),
  };
}

/** The digests kept in `file`; none when it does not exist yet. */
export function readRunDigests(file: string): RunDigest[] {
  if (!existsSync(file)) return [];
  const v = JSON.parse(readFileSync(file, "utf8")) as unknown;
  const ok =
    Array.isArray(v) &&
    v.every(
      (d) =>
        typeof d === "object" &&
        d !== null &&
        typeof (d as RunDigest).startedAt === "string" &&
        typeof (d as RunDigest).oneToOne === "object",
    );
  if (!ok) throw new Error(`${file}: expected an array of run digests`);
  return v as RunDigest[];
}

/**
 * The earlier digests with `d` added, oldest first and at most `keep` of
 * them; a digest of the same run (same start time) is replaced, not repeated.
 */
export function withDigest(earlier: readonly RunDigest[], d: RunDigest, keep = 20): RunDigest[] {
  return [...earlier.filter((e) => e.startedAt !== d.startedAt), d]
    .sort((a, b) => a.startedAt.localeCompare(b.startedAt))
    .slice(-keep);
}
