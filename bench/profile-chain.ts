/**
 * `npm run bench:profile`: measures the same ours-only scenarios on a chain
 * of revisions (a baseline, then one revision per profiling fix) and writes
 * bench/profile-fixes.json, which the report turns into its before/after
 * table. Each revision is checked out into a temporary git worktree and its
 * server runs under this checkout's bench (`--server-root`).
 *
 * The chain is bench/profile-chain.json:
 *   { "baseline": "<rev>", "fixes": [{ "rev", "before"?, "title", "detail" }, ...] }
 * A fix is measured against the fix before it, or against its own `before`
 * when other changes landed in between. `--since=<rev>` measures only the
 * fixes from that one on and keeps the earlier entries of the JSON as they are;
 * `--only=<rev>` measures that fix alone and keeps every other entry.
 * `--rounds=<n>` runs each revision n times, alternating before and after, and
 * records the median of each number: a single run cannot tell a change of a
 * few percent from this machine's drift.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import {
  type BenchRun,
  cpuUsPerEvent,
  medianEach,
  type ProfileFix,
  type ProfileMeasure,
} from "./lib/results.js";

interface Chain {
  baseline: string;
  fixes: { rev: string; before?: string; title: string; detail: string }[];
}

const repo = resolve(import.meta.dirname, "..");
const chain = JSON.parse(readFileSync(join(repo, "bench/profile-chain.json"), "utf8")) as Chain;

/** Sizes shared by every revision; small enough that the slowest revision still finishes. */
const sizes = [
  "rates:250/500/1000/1500/2000/2500/3000/3500/4000/4500/5000/6000/7000",
  // Every rate runs, so the per-message CPU below has a step to read at each revision.
  "strideHeadroom:0",
  "pairs:100",
  "stepMs:3000",
  "graceMs:1000",
  "idleSessions:5000",
  "idleStreams:20000",
  "idleSubscribeStreams:20000",
  "idleStreamsPerConnection:100",
  // One heartbeat interval, so the hold's CPU covers every session's heartbeat.
  "idleHoldMs:26000",
  "stormClients:3000",
  "stormGroupSize:500",
  "groupSize:500",
  "groupRates:2/5/10/20/40/80/120",
  "historyEvents:2000",
  "historySeconds:4",
].join(",");

const method =
  "ours only, the quick bench at the fixed sizes of bench/profile-chain.ts, " +
  "each revision's server in turn on the same machine";

interface Numbers {
  sustained: number;
  cpuUsPerMsgAt500: number;
  cpuUsPerMsgAt5000: number;
  connectSustained: number;
  connectCpuUsPerMsgAt1000: number;
  kbPerConn: number;
  sessionsPerSec: number;
  grpcKbPerSession: number;
  grpcSessionsPerSec: number;
  subscribeKbPerSession: number;
  subscribeSessionsPerSec: number;
  subscribeHoldCpuPct: number;
  connectSubscribeKbPerSession: number;
  connectSubscribeHoldCpuPct: number;
  stormMs: number;
  groupDeliveriesPerSec: number;
  historyEventsPerSec: number;
  resumeEventsPerSec: number;
  historyCpuUsPerEvent: number;
  resumeCpuUsPerEvent: number;
}

function measure(rev: string): Numbers {
  const dir = mkdtempSync(join(tmpdir(), "relaychat-rev-"));
  const tree = join(dir, "tree");
  const out = join(dir, "out");
  try {
    execFileSync("git", ["-C", repo, "worktree", "add", "--detach", tree, rev], {
      stdio: "ignore",
    });
    symlinkSync(join(repo, "node_modules"), join(tree, "node_modules"));
    process.stderr.write(`\n=== ${rev} ===\n`);
    const res = spawnSync(
      "npx",
      [
        "tsx",
        join(repo, "bench/run.ts"),
        "--quick",
        "--targets=ours",
        `--set=${sizes}`,
        `--server-root=${tree}`,
        // Four idle holds of a heartbeat interval each take the run past --quick's 4 minutes.
        "--budget-min=8",
        `--out=${out}`,
      ],
      { cwd: repo, stdio: ["ignore", "inherit", "inherit"], timeout: 15 * 60_000 },
    );
    if (res.status !== 0) throw new Error(`bench on ${rev} failed (${res.status})`);
    const run = JSON.parse(
      readFileSync(join(out, "bench", "results-quick.json"), "utf8"),
    ) as BenchRun;
    const one = run.oneToOne[0];
    const connect = run.oneToOneConnect?.[0];
    const cpuAt = (rate: number, ramp = one) => {
      const pct = ramp?.steps.find((s) => s.offeredPerSec === rate)?.targetCpuPct;
      return pct ? (pct * 10_000) / rate : 0;
    };
    const idle = run.idle.find((r) => !r.transport);
    const history = run.history[0];
    const streams = run.idle.find((r) => r.transport === "grpc-streams");
    const subscribes = run.idle.find((r) => r.transport === "grpc-subscribe-streams");
    const connectSubscribes = run.idle.find((r) => r.transport === "connect-subscribe-streams");
    return {
      sustained: one?.sustainedPerSec ?? 0,
      cpuUsPerMsgAt500: cpuAt(500),
      cpuUsPerMsgAt5000: cpuAt(5000),
      connectSustained: connect?.sustainedPerSec ?? 0,
      connectCpuUsPerMsgAt1000: cpuAt(1000, connect),
      kbPerConn: idle ? idle.rssPerConnBytes / 1024 : 0,
      sessionsPerSec: idle?.connectPerSec ?? 0,
      grpcKbPerSession: streams ? streams.rssPerConnBytes / 1024 : 0,
      grpcSessionsPerSec: streams?.connectPerSec ?? 0,
      subscribeKbPerSession: subscribes ? subscribes.rssPerConnBytes / 1024 : 0,
      subscribeSessionsPerSec: subscribes?.connectPerSec ?? 0,
      subscribeHoldCpuPct: subscribes?.holdCpuPct ?? 0,
      connectSubscribeKbPerSession: connectSubscribes
        ? connectSubscribes.rssPerConnBytes / 1024
        : 0,
      connectSubscribeHoldCpuPct: connectSubscribes?.holdCpuPct ?? 0,
      stormMs: run.reconnect[0]?.catchUpMs ?? 0,
      groupDeliveriesPerSec: run.groupFanout.results[0]?.sustainedDeliveriesPerSec ?? 0,
      historyEventsPerSec: run.history[0]?.paging.eventsPerSec ?? 0,
      resumeEventsPerSec: run.history[0]?.resume.eventsPerSec ?? 0,
      historyCpuUsPerEvent: history ? (cpuUsPerEvent(history.paging) ?? 0) : 0,
      resumeCpuUsPerEvent: history ? (cpuUsPerEvent(history.resume) ?? 0) : 0,
    };
  } finally {
    spawnSync("git", ["-C", repo, "worktree", "remove", "--force", tree], { stdio: "ignore" });
    rmSync(dir, { recursive: true, force: true });
  }
}

function measures(before: Numbers, after: Numbers): ProfileMeasure[] {
  const m = (
    metric: string,
    unit: string,
    key: keyof Numbers,
    lowerIsBetter = false,
  ): ProfileMeasure => ({
    metric,
    unit,
    before: before[key],
    after: after[key],
    ...(lowerIsBetter ? { lowerIsBetter } : {}),
  });
  return [
    m("1:1 sustained at p99 ≤ 50 ms", "msgs/s", "sustained"),
    m("server CPU per message at 500 msgs/s", "µs", "cpuUsPerMsgAt500", true),
    m("server CPU per message at 5,000 msgs/s", "µs", "cpuUsPerMsgAt5000", true),
    m("1:1 from Connect clients (unary sends) at p99 ≤ 50 ms", "msgs/s", "connectSustained"),
    m(
      "server CPU per message from Connect clients at 1,000 msgs/s",
      "µs",
      "connectCpuUsPerMsgAt1000",
      true,
    ),
    m("group fan-out, 500 members", "deliveries/s", "groupDeliveriesPerSec"),
    m("idle RSS per connection, 5,000 sessions", "KB", "kbPerConn", true),
    m("session setup", "sessions/s", "sessionsPerSec"),
    m("idle RSS per gRPC Session stream, 20,000 streams", "KB", "grpcKbPerSession", true),
    m("gRPC Session stream setup", "streams/s", "grpcSessionsPerSec"),
    m("idle RSS per gRPC Subscribe stream, 20,000 streams", "KB", "subscribeKbPerSession", true),
    m("gRPC Subscribe stream setup", "streams/s", "subscribeSessionsPerSec"),
    m(
      "server CPU holding 20,000 gRPC Subscribe streams (unary heartbeats)",
      "% of a core",
      "subscribeHoldCpuPct",
      true,
    ),
    m(
      "idle RSS per Connect-protocol Subscribe stream, 20,000 streams",
      "KB",
      "connectSubscribeKbPerSession",
      true,
    ),
    m(
      "server CPU holding 20,000 Connect-protocol Subscribe streams (unary heartbeats)",
      "% of a core",
      "connectSubscribeHoldCpuPct",
      true,
    ),
    m("reconnect storm, 3,000 clients", "ms to all caught up", "stormMs", true),
    m("history paging", "events/s", "historyEventsPerSec"),
    m("resume (sync)", "events/s", "resumeEventsPerSec"),
    m("server CPU per event, history paging", "µs", "historyCpuUsPerEvent", true),
    m("server CPU per event, resume (sync)", "µs", "resumeCpuUsPerEvent", true),
  ];
}

const flag = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const since = flag("since");
const only = flag("only");
const rounds = Number(flag("rounds") ?? 1);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds: a whole number, 1 or more");
if (since && only) throw new Error("--since and --only: one or the other");
const indexOf = (rev: string, name: string) => {
  const i = chain.fixes.findIndex((f) => f.rev === rev);
  if (i < 0) throw new Error(`--${name}: ${rev} is not a fix in bench/profile-chain.json`);
  return i;
};
const firstFix = since ? indexOf(since, "since") : only ? indexOf(only, "only") : 0;
const lastFix = only ? firstFix + 1 : chain.fixes.length;
const outPath = join(repo, "bench/profile-fixes.json");
const previous: ProfileFix[] =
  since || only ? (JSON.parse(readFileSync(outPath, "utf8")) as ProfileFix[]) : [];

const beforeOf = (i: number) => chain.fixes[i]!.before ?? chain.fixes[i - 1]?.rev ?? chain.baseline;
const runs = new Map<string, Numbers[]>();
const measured: ProfileFix[] = [];
for (let i = firstFix; i < lastFix; i++) {
  const f = chain.fixes[i]!;
  const prev = beforeOf(i);
  // Before, after, before, after…: drift over the runs falls on both alike.
  for (let round = 0; round < rounds; round++) {
    for (const rev of [prev, f.rev]) {
      const done = runs.get(rev) ?? [];
      runs.set(rev, done);
      if (done.length <= round) done.push(measure(rev));
    }
  }
  const of = (rev: string) => medianEach(runs.get(rev)!);
  measured.push({
    title: f.title,
    detail: f.detail,
    method:
      `${method}; ${prev} → ${f.rev}` +
      (rounds > 1 ? `; the median of ${rounds} runs of each, alternating` : ""),
    measures: measures(of(prev), of(f.rev)),
  });
}
const fixes = [
  ...previous.slice(0, firstFix),
  ...measured,
  ...(only ? previous.slice(lastFix) : []),
];
writeFileSync(outPath, `${JSON.stringify(fixes, null, 2)}\n`);
process.stderr.write("\nwrote bench/profile-fixes.json\n");
