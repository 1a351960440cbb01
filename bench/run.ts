/**
 * `npm run bench` (about 10 minutes here) and `npm run bench -- --quick`
 * (about a minute): every scenario against ours, the raw relay and ejabberd, in one
 * run on this machine; 1:1 runs ours once more over gRPC. Writes the results JSON and docs/BENCHMARKS.md.
 *
 * Flags: --quick, --only=<scenario,...> (one-to-one, group-fanout, idle,
 * reconnect, history), --targets=<name,...>, --out=<dir> (where
 * the JSON and the report go; default docs/ for a full run, .tmp/bench for
 * --quick), --server-root=<checkout> (measure another revision of the server),
 * --cpu-prof=<dir> (V8 CPU profiles of our server, one per scenario),
 * --set=<size>:<n>,... (override sizes, e.g. idleSessions:5000 or rates:1000/2000),
 * --budget-min=<n> (the time limit, for runs larger than their mode's).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import {
  cassandraPid,
  cassandraRunning,
  ensureCassandra,
  stopCassandra,
} from "../test/helpers/dev-env.js";
import { probeCassandraFloor } from "./lib/cassandra-floor.js";
import {
  type BenchContext,
  fullScale,
  groupSloUs,
  type LoadWorker,
  quickScale,
  startWorkers,
  warmUp,
} from "./lib/context.js";
import { probeCpu } from "./lib/cpu.js";
import { probeDisk } from "./lib/disk.js";
import { killAll, machineQuiet } from "./lib/procs.js";
import {
  type BenchRun,
  type DiskProbe,
  digestOf,
  type IdleResult,
  type ProfileFix,
  type RampResult,
  readRunDigests,
  type TargetName,
  withDigest,
} from "./lib/results.js";
import { probeStoreFloor } from "./lib/store-floor.js";
import { writeReport } from "./report.js";
import { groupFanout } from "./scenarios/group-fanout.js";
import { historySync } from "./scenarios/history-sync.js";
import { openIdle } from "./scenarios/idle.js";
import { oneToOne } from "./scenarios/one-to-one.js";
import { reconnectStorm } from "./scenarios/reconnect-storm.js";
import { ensureEjabberd } from "./targets/ejabberd.js";
import { benchSettings } from "./targets/ours.js";

const repo = resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
if (args.includes("--help")) {
  process.stdout.write(`usage: npm run bench -- [flags]
  --quick                 smoke run of about a minute (writes .tmp/bench/ unless --out)
  --only=a,b              scenarios: one-to-one (ours over WebSocket, then gRPC, then Connect, then split), group-fanout,
                          idle, reconnect, history
  --targets=a,b           systems: ours, relay, ejabberd-routing, ejabberd-archive
  --out=<dir>             where results (bench/results-*.json) and BENCHMARKS.md go
  --server-root=<dir>     measure another checkout of the server (before/after a fix)
  --cpu-prof=<dir>        V8 CPU profiles of our server, one per scenario
  --set=<size>:<n>,...    override sizes, e.g. idleSessions:5000 or rates:1000/2000
  --budget-min=<n>        stop everything after n minutes (default 4 with --quick, else 20)
`);
  process.exit(0);
}
const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const quick = args.includes("--quick");
const only = flag("only")?.split(",");
const targetFilter = flag("targets")?.split(",");
const outDir = resolve(flag("out") ?? (quick ? join(repo, ".tmp/bench") : join(repo, "docs")));
const serverRoot = flag("server-root");
const cpuProfileDir = flag("cpu-prof");

// Bounded in time whatever happens: the deadline kills every process the bench started.
const budgetMs = (Number(flag("budget-min")) || (quick ? 4 : 20)) * 60_000;
const deadline = setTimeout(() => {
  process.stderr.write(`\nbench: over its ${budgetMs / 60_000} min budget, stopping\n`);
  killAll();
  process.exit(2);
}, budgetMs);
deadline.unref();

const startedAt = Date.now();
const tty = process.stderr.isTTY;
let lastProgress = "";
const elapsed = () => `${((Date.now() - startedAt) / 1000).toFixed(0).padStart(4)}s`;
const progress = (line: string) => {
  lastProgress = line;
  if (tty) process.stderr.write(`\r\x1b[2K[${elapsed()}] ${line}`);
};
const log = (line: string) => {
  process.stderr.write(`${tty ? "\r\x1b[2K" : ""}[${elapsed()}] ${line}\n`);
  if (tty && lastProgress) process.stderr.write(`[${elapsed()}] ${lastProgress}`);
};
// Without a terminal, show the progress line now and then so CI logs show life.
const ticker = tty ? undefined : setInterval(() => lastProgress && log(lastProgress), 10_000);
ticker?.unref();

function sh(cmd: string, argv: string[]): string {
  try {
    return execFileSync(cmd, argv, {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return "";
  }
}

function fdLimit(): number {
  const m = /Max open files\s+(\d+)/.exec(readFileSync("/proc/self/limits", "utf8"));
  return m ? Number(m[1]) : 0;
}

const head = sh("git", ["-C", repo, "rev-parse", "--short", "HEAD"]) || "unknown";
// Results in docs/ are the bench's own output; any other tracked change means HEAD is not what ran.
const changed = sh("git", [
  "-C",
  repo,
  "status",
  "--porcelain",
  "--untracked-files=no",
  "--",
  ".",
  ":!docs",
]);

const diskProbes: DiskProbe[] = [];
const oneToOneGrpc: RampResult[] = [];
const oneToOneConnect: RampResult[] = [];
const oneToOneSplit: RampResult[] = [];
const oneToOneCassandra: RampResult[] = [];
const oneToOnePulsar: RampResult[] = [];
const run: BenchRun = {
  startedAt: new Date(startedAt).toISOString(),
  durationMs: 0,
  mode: quick ? "quick" : "full",
  gitCommit: changed ? `${head}-dirty` : head,
  machine: {
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    memoryBytes: os.totalmem(),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    fdLimit: fdLimit(),
  },
  disk: diskProbes,
  cpu: [],
  settings: {
    ...benchSettings,
    "load generator":
      "2 worker processes on the same 2 cores; clients spread over 127.0.x.y source addresses",
    ...(serverRoot ? { "server checkout": serverRoot } : {}),
  },
  oneToOne: [],
  oneToOneGrpc,
  oneToOneConnect,
  oneToOneSplit,
  oneToOneCassandra,
  oneToOnePulsar,
  groupFanout: { groupSize: 0, groups: 0, sloP99Us: groupSloUs, results: [] },
  idle: [],
  reconnect: [],
  history: [],
  timings: [],
  skipped: [],
};
const wants = (scenario: string) => !only || only.includes(scenario);
const pick = (names: TargetName[]) =>
  targetFilter ? names.filter((n) => targetFilter.includes(n)) : names;
// ejabberd is set up here, once per machine, when a scenario that runs it is chosen.
if (
  pick(["ejabberd-routing", "ejabberd-archive"]).length > 0 &&
  ["one-to-one", "group-fanout", "idle"].some(wants)
) {
  const ejabberd = ensureEjabberd();
  if (ejabberd.installed)
    log("ejabberd: installed Debian's packages (scripts/install-ejabberd.sh)");
  else if (!ejabberd.ok) log(`ejabberd: ${ejabberd.reason}; its targets will be skipped`);
}
const pg = sh("psql", ["-h", "127.0.0.1", "-U", "postgres", "-tAc", "show server_version"]);
if (pg) run.machine.postgresVersion = pg;
const ej = sh("dpkg-query", ["-W", "-f", "$" + "{Version}", "ejabberd"]);
if (ej) run.machine.ejabberdVersion = `${ej} (Debian)`;

// --set=idleSessions:5000,idleHoldMs:30000 overrides sizes of the chosen scale.
const scale = { ...(quick ? quickScale : fullScale) };
for (const kv of flag("set")?.split(",") ?? []) {
  const [k, v] = kv.split(":");
  if (!k || !(k in scale) || v === undefined) throw new Error(`--set: unknown size ${k}`);
  // A size that is a list stays one even when given a single value.
  const value = Array.isArray(scale[k as keyof typeof scale])
    ? v.split("/").map(Number)
    : Number(v);
  Object.assign(scale, { [k]: value });
}
const warm = warmUp(quick, scale.rates);
run.rampStep = {
  sendMs: scale.stepMs,
  graceMs: scale.graceMs,
  earlyEnd: true,
  warmUp: { ms: warm.ms, at: warm.at },
};
run.groupFanout.groupSize = scale.groupSize;
run.groupFanout.groups = scale.groups;
const workers = await startWorkers(2);
run.settings["load generator"] += workers.every((w) => w.batch)
  ? "; SCHED_BATCH, so a reply that wakes it does not preempt the system under test"
  : "; normal scheduling (chrt was not available for SCHED_BATCH)";
const ctx: BenchContext = {
  scale,
  quick,
  workers,
  run,
  progress,
  log,
  ...(serverRoot ? { serverRoot: resolve(serverRoot) } : {}),
  ...(cpuProfileDir ? { cpuProfileDir: resolve(cpuProfileDir) } : {}),
};

let errors = 0;

/** Waits for a quiet machine, probes the disk and CPU, and says what runs next. */
async function before(scenario: string, name: TargetName, variant?: string) {
  const waited = await machineQuiet(15, quick ? 250 : 1000);
  const disk = probeDisk(`${scenario}/${name}`);
  diskProbes.push(disk);
  const cpu = probeCpu(`${scenario}/${name}`);
  run.cpu?.push(cpu);
  log(
    `${scenario}: ${name}${variant ? ` (${variant})` : ""} (disk: 4 KiB write + fdatasync p50 ${(disk.p50Us / 1000).toFixed(2)} ms, p99 ${(disk.p99Us / 1000).toFixed(2)} ms; cpu probe ${cpu.medianMs} ms; waited ${(waited / 1000).toFixed(1)} s for a quiet machine)`,
  );
  // The store's floor is this checkout's code, so it is left out when another checkout is measured.
  if (scenario === "one-to-one" && name === "ours" && !variant && !serverRoot) {
    run.storeFloor = probeStoreFloor(quick ? 5000 : 40_000);
    log(
      `${scenario}: ours' store, ${run.storeFloor.eventsPerCommit} events per commit: ${run.storeFloor.cpuUsPerEvent} µs of CPU per event`,
    );
  }
}

/** Records a scenario that failed on a system and closes what its load workers held. */
async function failed(scenario: string, name: TargetName, err: unknown, on: LoadWorker[]) {
  errors++;
  const reason = err instanceof Error ? err.message : String(err);
  run.skipped.push({ scenario, target: name, reason: `error: ${reason}` });
  log(`ERROR ${scenario} on ${name}: ${err instanceof Error ? err.stack : reason}`);
  await Promise.all(on.map((w) => w.rpc("closeAll").catch(() => undefined)));
}

async function each<T>(
  scenario: string,
  names: TargetName[],
  fn: (n: TargetName) => Promise<T | undefined>,
  out: T[],
  variant?: string,
) {
  if (!wants(scenario)) return;
  for (const name of pick(names)) {
    const began = Date.now();
    await before(scenario, name, variant);
    try {
      const r = await fn(name);
      if (r) out.push(r);
    } catch (err) {
      await failed(scenario, name, err, workers);
    }
    run.timings?.push({
      scenario,
      target: name,
      ...(variant ? { variant } : {}),
      ms: Date.now() - began,
    });
  }
}

type IdleForm = NonNullable<Parameters<typeof openIdle>[2]>;

/**
 * The idle runs, overlapped: while one system holds its sessions, the next
 * opens its own on a second set of load workers, and each hold still ends on
 * time. RSS and CPU are read per process, so neither run counts the other's.
 * A job marked `alone` neither opens beside a hold nor holds beside an
 * opening. A run's time in `timings` lasts until the next one began.
 */
async function eachIdle(
  jobs: { name: TargetName; form: IdleForm; variant?: string; alone?: boolean }[],
) {
  if (!wants("idle")) return;
  const picked = jobs.filter((j) => pick([j.name]).length > 0);
  run.idleOverlapped = picked.length > 1;
  const sets = [workers, picked.length > 1 ? await startWorkers(workers.length) : workers];
  const began: number[] = [];
  const results: (IdleResult | undefined)[] = [];
  let holding: Promise<void> | undefined;
  for (const [k, job] of picked.entries()) {
    const on = sets[k % 2] ?? workers;
    if (job.alone) {
      await holding;
      holding = undefined;
    }
    began.push(Date.now());
    await before("idle", job.name, job.variant);
    let finishing: Promise<void> | undefined;
    try {
      const held = await openIdle({ ...ctx, workers: on }, job.name, job.form);
      finishing = held?.finish().then(
        (r) => {
          results[k] = r;
        },
        (err) => failed("idle", job.name, err, on),
      );
    } catch (err) {
      await failed("idle", job.name, err, on);
    }
    if (job.alone) {
      await finishing;
      continue;
    }
    // The run before this one ends its hold while this one opens; the next reuses its workers.
    await holding;
    holding = finishing;
  }
  await holding;
  for (const r of results) if (r) run.idle.push(r);
  if (sets[1] !== workers) await Promise.all(sets[1]?.map((w) => w.stop()) ?? []);
  picked.forEach((job, k) => {
    run.timings?.push({
      scenario: "idle",
      target: job.name,
      ...(job.variant ? { variant: job.variant } : {}),
      ms: (began[k + 1] ?? Date.now()) - (began[k] ?? 0),
    });
  });
}

const all: TargetName[] = ["ours", "relay", "ejabberd-routing", "ejabberd-archive"];
await each("one-to-one", all, (n) => oneToOne(ctx, n), run.oneToOne);
// Ours once more over each of its other client transports: native apps', then web apps'.
for (const [transport, results, variant] of [
  ["grpc", oneToOneGrpc, "gRPC Session streams"],
  ["connect", oneToOneConnect, "Connect Subscribe + unary Send"],
] as const) {
  await each("one-to-one", ["ours"], (n) => oneToOne(ctx, n, transport), results, variant);
}
// And as a split deployment, a core and two edges (an older checkout may have no split).
if (!serverRoot) {
  await each(
    "one-to-one",
    ["ours"],
    (n) => oneToOne(ctx, n, "websocket", { split: 2 }),
    oneToOneSplit,
    "split: core + 2 edges, Redis",
  );
  await each(
    "one-to-one",
    ["ours"],
    async (n) => {
      const started = !(await cassandraRunning());
      const node = await ensureCassandra();
      const pid = cassandraPid();
      try {
        const ramp = await oneToOne(ctx, n, "websocket", { cassandra: true });
        // Then the store alone on the node the ramp warmed up: what a message costs Cassandra.
        const floor = await probeCassandraFloor({
          ...node,
          ...(pid ? { pid } : {}),
          ...(quick ? { conversations: 20, perConversation: 10, warmUpRounds: 1 } : {}),
        });
        run.cassandraFloor = floor;
        log(
          `one-to-one: ours' Cassandra store alone, ${floor.conversations} conversations: ` +
            `${floor.eventsPerSec} msgs/s, Cassandra ${floor.cassandraCpuUsPerEvent ?? "?"} µs ` +
            `and the server ${floor.serverCpuUsPerEvent} µs of CPU per message`,
        );
        return ramp;
      } finally {
        if (started) await stopCassandra();
      }
    },
    oneToOneCassandra,
    "store in Cassandra",
  );
  await each(
    "one-to-one",
    ["ours"],
    (n) => oneToOne(ctx, n, "websocket", { pulsar: true }),
    oneToOnePulsar,
    "log in Pulsar",
  );
}
await each(
  "group-fanout",
  ["ours", "relay", "ejabberd-routing"],
  (n) => groupFanout(ctx, n),
  run.groupFanout.results,
);
// Ours with its sessions as streams on shared HTTP/2 connections, in each form; then every
// system with one socket per session. ejabberd runs alone, so whatever overlap may cost falls
// on ours and the relay, not on the anchor.
await eachIdle([
  { name: "ours", form: "streams", variant: "gRPC Session streams" },
  { name: "ours", form: "subscribe-streams", variant: "gRPC Subscribe streams" },
  { name: "ours", form: "connect-subscribe-streams", variant: "Connect Subscribe streams" },
  { name: "ours", form: "sockets" },
  { name: "relay", form: "sockets" },
  { name: "ejabberd-routing", form: "sockets", alone: true },
]);
await each("reconnect", ["ours"], () => reconnectStorm(ctx), run.reconnect);
await each("history", ["ours"], () => historySync(ctx), run.history);

await Promise.all(workers.map((w) => w.stop()));
run.durationMs = Date.now() - startedAt;

mkdirSync(join(outDir, "bench"), { recursive: true });
const resultsFile = join(outDir, "bench", `results-${run.mode}.json`);
writeFileSync(resultsFile, `${JSON.stringify(run, null, 2)}\n`);
const profilePath = join(repo, "bench/profile-fixes.json");
const profile: ProfileFix[] = existsSync(profilePath)
  ? (JSON.parse(readFileSync(profilePath, "utf8")) as ProfileFix[])
  : [];
// A full run at the standard sizes, every scenario and system, joins the record of earlier runs.
const standard =
  !quick &&
  !only &&
  !targetFilter &&
  !flag("set") &&
  !serverRoot &&
  !cpuProfileDir &&
  errors === 0 &&
  run.skipped.length === 0;
const runsFile = join(outDir, "bench", "runs-full.json");
const runs = standard ? withDigest(readRunDigests(runsFile), digestOf(run)) : [];
if (standard) writeFileSync(runsFile, `${JSON.stringify(runs, null, 2)}\n`);
const report = await writeReport(run, { docsDir: outDir, profile, resultsFile, runs });
log(`results: ${resultsFile}`);
log(`report: ${report.markdownPath}`);
log(
  `done in ${(run.durationMs / 1000).toFixed(0)} s${errors ? `, ${errors} scenario(s) failed` : ""}`,
);
clearTimeout(deadline);
killAll();
process.exitCode = errors ? 1 : 0;
