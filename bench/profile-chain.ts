/**
 * `npm run bench:profile`: measures the same ours-only scenarios on a chain
 * of revisions (a baseline, then one revision per profiling fix) and writes
 * bench/profile-fixes.json, which the report turns into its before/after
 * table. Each revision is checked out into a temporary git worktree and its
 * server runs under this checkout's bench (`--server-root`).
 *
 * The chain is bench/profile-chain.json:
 *   { "baseline": "<rev>", "fixes": [{ "rev", "title", "detail" }, ...] }
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { BenchRun, ProfileFix, ProfileMeasure } from "./lib/results.js";

interface Chain {
  baseline: string;
  fixes: { rev: string; title: string; detail: string }[];
}

const repo = resolve(import.meta.dirname, "..");
const chain = JSON.parse(readFileSync(join(repo, "bench/profile-chain.json"), "utf8")) as Chain;

/** Sizes shared by every revision; small enough that the slowest revision still finishes. */
const sizes = [
  "rates:250/500/1000/1500/2000/2500/3000/3500/4000/4500/5000/6000/7000",
  "pairs:100",
  "stepMs:3000",
  "graceMs:1000",
  "idleSessions:5000",
  "idleHoldMs:2000",
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
  kbPerConn: number;
  sessionsPerSec: number;
  stormMs: number;
  groupDeliveriesPerSec: number;
  historyEventsPerSec: number;
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
        `--out=${out}`,
      ],
      { cwd: repo, stdio: ["ignore", "inherit", "inherit"], timeout: 15 * 60_000 },
    );
    if (res.status !== 0) throw new Error(`bench on ${rev} failed (${res.status})`);
    const run = JSON.parse(
      readFileSync(join(out, "bench", "results-quick.json"), "utf8"),
    ) as BenchRun;
    const one = run.oneToOne[0];
    const at500 = one?.steps.find((s) => s.offeredPerSec === 500);
    const idle = run.idle[0];
    return {
      sustained: one?.sustainedPerSec ?? 0,
      cpuUsPerMsgAt500: at500?.targetCpuPct ? (at500.targetCpuPct * 10_000) / 500 : 0,
      kbPerConn: idle ? idle.rssPerConnBytes / 1024 : 0,
      sessionsPerSec: idle?.connectPerSec ?? 0,
      stormMs: run.reconnect[0]?.catchUpMs ?? 0,
      groupDeliveriesPerSec: run.groupFanout.results[0]?.sustainedDeliveriesPerSec ?? 0,
      historyEventsPerSec: run.history[0]?.paging.eventsPerSec ?? 0,
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
    m("group fan-out, 500 members", "deliveries/s", "groupDeliveriesPerSec"),
    m("idle RSS per connection, 5,000 sessions", "KB", "kbPerConn", true),
    m("session setup", "sessions/s", "sessionsPerSec"),
    m("reconnect storm, 3,000 clients", "ms to all caught up", "stormMs", true),
    m("history paging", "events/s", "historyEventsPerSec"),
  ];
}

const results = new Map<string, Numbers>();
for (const rev of [chain.baseline, ...chain.fixes.map((f) => f.rev)]) {
  results.set(rev, measure(rev));
}
const fixes: ProfileFix[] = [];
let prev = chain.baseline;
for (const f of chain.fixes) {
  fixes.push({
    title: f.title,
    detail: f.detail,
    method: `${method}; ${prev} → ${f.rev}`,
    measures: measures(results.get(prev)!, results.get(f.rev)!),
  });
  prev = f.rev;
}
writeFileSync(join(repo, "bench/profile-fixes.json"), `${JSON.stringify(fixes, null, 2)}\n`);
process.stderr.write("\nwrote bench/profile-fixes.json\n");
