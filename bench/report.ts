/**
 * Turns one BenchRun into docs/BENCHMARKS.md plus hand-written SVG charts under docs/bench/.
 * Everything except writeReport is pure so tests can check the text without touching disk.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  type BenchRun,
  cpuUsPerEvent,
  type HistoryResult,
  type IdleResult,
  type LatencySummary,
  oursCpuProbe,
  oursDiskProbe,
  type ProfileFix,
  type ProfileMeasure,
  type RampResult,
  type RateStep,
  type ReconnectResult,
  type RunDigest,
  type TargetName,
} from "./lib/results.js";
import { boundsInShort, renderCeilingStudy } from "./report-findings.js";

/** Display order of the systems; the summary columns follow it. */
export const TARGETS: readonly TargetName[] = [
  "ours",
  "relay",
  "ejabberd-routing",
  "ejabberd-archive",
];

/** One color per system, shared by every chart so a target reads the same everywhere. */
export const TARGET_COLORS: Readonly<Record<TargetName, string>> = {
  ours: "#2563eb",
  relay: "#16a34a",
  "ejabberd-routing": "#ea580c",
  "ejabberd-archive": "#9333ea",
};

/** The 1:1 and group SLO: p99 intended-send → deliver, in microseconds. */
export const SLO_P99_US = 50_000;

/** Scenario keys; `skipped[].scenario` should use these ids (a few spellings are accepted). */
export type ScenarioKey = "oneToOne" | "groupFanout" | "idle" | "reconnect" | "history";

export const SCENARIO_IDS: Readonly<Record<ScenarioKey, string>> = {
  oneToOne: "one-to-one",
  groupFanout: "group-fanout",
  idle: "idle",
  reconnect: "reconnect",
  history: "history",
};

const SCENARIO_TITLES: Readonly<Record<ScenarioKey, string>> = {
  oneToOne: "1:1 chat",
  groupFanout: "group fan-out",
  idle: "idle connections",
  reconnect: "reconnect storm",
  history: "history/sync",
};

// Normalized (lowercase, alphanumerics only) spellings the scenario runners might use.
const SCENARIO_ALIASES: Readonly<Record<ScenarioKey, readonly string[]>> = {
  oneToOne: ["onetoone", "1to1", "11", "direct", "dm", "chat"],
  groupFanout: ["groupfanout", "group", "groups", "fanout", "muc"],
  idle: ["idle", "idleconnections", "connections", "memory"],
  reconnect: ["reconnect", "reconnectstorm", "storm", "catchup"],
  history: ["history", "historysync", "sync", "paging", "resume"],
};

/** Chart file names under `${docsDir}/bench/`, keyed like the `chartFiles` of renderMarkdown. */
export const CHART_NAMES = {
  oneToOne: "one-to-one.svg",
  groupFanout: "group-fanout.svg",
  idle: "idle-memory.svg",
} as const;

export type ChartKey = keyof typeof CHART_NAMES;

const IDLE_TARGET_SESSIONS = 100_000;
const IDLE_TARGET_BYTES_PER_CONN = 10 * 1024;
const RECONNECT_TARGET_CLIENTS = 10_000;
const RECONNECT_TARGET_MS = 10_000;

// ---------------------------------------------------------------------------
// Number formatting

function groupThousands(digits: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Fixed decimals with thousands separators, locale-independent so output is reproducible. */
export function fmtNum(n: number, decimals = 0): string {
  if (!Number.isFinite(n)) return n > 0 ? "∞" : "—";
  const fixed = Math.abs(n).toFixed(decimals);
  const [int = "0", frac] = fixed.split(".");
  const sign = n < 0 && Number(fixed) !== 0 ? "-" : "";
  return `${sign}${groupThousands(int)}${frac === undefined ? "" : `.${frac}`}`;
}

/** Microseconds as milliseconds: two decimals below 10 ms, one above. */
export function fmtMs(us: number): string {
  const ms = us / 1000;
  return fmtNum(ms, Math.abs(ms) < 10 ? 2 : 1);
}

/** Bytes as KB (1 KB = 1,024 bytes) with one decimal. */
export function fmtKb(bytes: number): string {
  return fmtNum(bytes / 1024, 1);
}

function fmtMb(bytes: number): string {
  return fmtNum(bytes / (1024 * 1024), 1);
}

function fmtGib(bytes: number): string {
  return `${fmtNum(bytes / 1024 ** 3, 1)} GiB`;
}

/** Wall-clock milliseconds as a short human duration ("850 ms", "12.3 s", "4 min 5 s"). */
export function fmtDuration(ms: number): string {
  if (ms < 1000) return `${fmtNum(ms)} ms`;
  if (ms < 60_000) return `${fmtNum(ms / 1000, ms < 10_000 ? 2 : 1)} s`;
  const totalS = Math.round(ms / 1000);
  const h = Math.floor(totalS / 3600);
  const m = Math.floor((totalS % 3600) / 60);
  const s = totalS % 60;
  return h > 0 ? `${h} h ${m} min ${s} s` : `${m} min ${s} s`;
}

/** ours ÷ theirs as "2.00×"; "—" when either side is missing. */
export function fmtRatio(ours: number | undefined, theirs: number | undefined): string {
  if (ours === undefined || theirs === undefined) return "—";
  if (theirs === 0) return ours === 0 ? "—" : "∞";
  return `${(ours / theirs).toFixed(2)}×`;
}

function fmtDate(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

// ---------------------------------------------------------------------------
// Markdown helpers

function cell(text: string): string {
  return text.replace(/\r?\n/g, " ").replace(/\|/g, "\\|");
}

/** A GFM table; numeric-looking columns are right-aligned by the caller via `align`. */
function table(headers: string[], rows: string[][], align?: ("l" | "r")[]): string {
  const sep = headers.map((_, i) => ((align?.[i] ?? "l") === "r" ? "---:" : "---"));
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  return [line(headers), `|${sep.map((s) => ` ${s} `).join("|")}|`, ...rows.map(line)].join("\n");
}

function code(text: string): string {
  return `\`${text.replace(/`/g, "'")}\``;
}

function byTarget<T extends { target: TargetName }>(
  items: readonly T[],
  target: TargetName,
): T | undefined {
  return items.find((item) => item.target === target);
}

const isStreams = (r: IdleResult) => r.transport === "grpc-streams";
const isSubscribes = (r: IdleResult) => r.transport === "grpc-subscribe-streams";
const isConnectSubscribes = (r: IdleResult) => r.transport === "connect-subscribe-streams";

/** Idle results with one socket per session (every target's comparable run). */
function socketIdle(run: BenchRun): IdleResult[] {
  return run.idle.filter((r) => r.transport === undefined);
}

/** Ours with sessions as gRPC Session streams over shared HTTP/2 connections, if it ran. */
function streamIdle(run: BenchRun): IdleResult | undefined {
  return run.idle.find((r) => r.target === "ours" && isStreams(r));
}

/** Ours with sessions as gRPC Subscribe calls over shared HTTP/2 connections, if it ran. */
function subscribeIdle(run: BenchRun): IdleResult | undefined {
  return run.idle.find((r) => r.target === "ours" && isSubscribes(r));
}

function normalize(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]/g, "");
}

function scenarioOf(name: string): ScenarioKey | undefined {
  const n = normalize(name);
  const keys = Object.keys(SCENARIO_ALIASES) as ScenarioKey[];
  return keys.find((k) => normalize(SCENARIO_IDS[k]) === n || SCENARIO_ALIASES[k].includes(n));
}

/** Why a target has no result for a scenario, from run.skipped. */
function skipReason(run: BenchRun, scenario: ScenarioKey, target: TargetName): string {
  const hit = run.skipped.find((s) => s.target === target && scenarioOf(s.scenario) === scenario);
  if (hit) return hit.reason;
  // Storm and history drive our own sync path; the others have no equivalent API.
  if ((scenario === "reconnect" || scenario === "history") && target !== "ours") {
    return "ours only: the scenario exercises our cursor-resume and history API";
  }
  if (scenario === "idle" && target === "ejabberd-archive") {
    return "idle sessions do not touch the archive; measured on ejabberd-routing";
  }
  if (scenario === "groupFanout" && target === "ejabberd-archive") {
    return "MUC measured on ejabberd-routing";
  }
  return "not run";
}

function presentTargets(run: BenchRun, scenario: ScenarioKey): Set<TargetName> {
  const lists: Record<ScenarioKey, readonly { target: TargetName }[]> = {
    oneToOne: run.oneToOne,
    groupFanout: run.groupFanout.results,
    idle: run.idle,
    reconnect: run.reconnect,
    history: run.history,
  };
  return new Set(lists[scenario].map((r) => r.target));
}

/** "No result for: …" line under a section, listing the reason per absent target. */
function absentNote(run: BenchRun, scenario: ScenarioKey): string | undefined {
  const present = presentTargets(run, scenario);
  const absent = TARGETS.filter((t) => !present.has(t));
  if (absent.length === 0) return undefined;
  const parts = absent.map((t) => `${code(t)} (${skipReason(run, scenario, t)})`);
  return `No result for ${parts.join(", ")}.`;
}

function notesList(items: readonly { target: TargetName; notes?: string[] }[]): string[] {
  const out: string[] = [];
  for (const item of items) {
    for (const note of item.notes ?? []) out.push(`- ${code(item.target)}: ${note}`);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Summary and targets

interface SummaryRow {
  scenario: ScenarioKey;
  label: string;
  values: Partial<Record<TargetName, number>>;
  format: (n: number) => string;
  /** Why targets other than ours have no value in this row, when the row is ours only. */
  oursOnly?: string;
  /** What the "—" footnote calls an ours-only row (default: idle sessions as gRPC streams). */
  oursOnlyTitle?: string;
}

function valuesOf<T extends { target: TargetName }>(
  items: readonly T[],
  pick: (item: T) => number,
): Partial<Record<TargetName, number>> {
  const out: Partial<Record<TargetName, number>> = {};
  for (const item of items) out[item.target] = pick(item);
  return out;
}

const streamsOnlyOurs =
  "ours only: many sessions on one HTTP/2 connection is our gRPC transport; the others are compared with one socket per session";

const grpcOnlyOurs =
  "ours only: gRPC is our native clients' transport; the row above compares every system over WebSocket or XMPP, one socket per client";

const splitOnlyOurs =
  "ours only: a split deployment (a core and two edges, soft state in Redis) is ours' own way past one process; the row above compares every system as one server";
const cassandraOnlyOurs =
  "ours only: the store in Cassandra is ours' own way to keep events past one machine's disk; the row above compares every system as one server on its local store";
const pulsarOnlyOurs =
  "ours only: the log in Pulsar is ours' own way to acknowledge from a replicated log before its store commits; the row above compares every system as one server on its local store";
const connectOnlyOurs =
  "ours only: Connect's protocol is our web clients' transport; the row above compares every system over WebSocket or XMPP, one socket per client";

/** The 1:1 row of ours alone over another of its client transports, when that ramp ran. */
function oursOnlyRamp(
  results: readonly RampResult[] | undefined,
  label: string,
  oursOnly: string,
  oursOnlyTitle: string,
): SummaryRow[] {
  if (!results?.length) return [];
  const values = valuesOf(results, (r) => r.sustainedPerSec);
  return [{ scenario: "oneToOne", label, values, format: fmtNum, oursOnly, oursOnlyTitle }];
}

function summaryRows(run: BenchRun): SummaryRow[] {
  const int = (n: number) => fmtNum(n);
  const streamIdles = run.idle.filter(isStreams);
  const subscribeIdles = run.idle.filter(isSubscribes);
  const connectSubscribeIdles = run.idle.filter(isConnectSubscribes);
  return [
    {
      scenario: "oneToOne",
      label: "1:1 sustained msgs/s (p99 deliver ≤ 50 ms)",
      values: valuesOf(run.oneToOne, (r) => r.sustainedPerSec),
      format: int,
    },
    ...oursOnlyRamp(
      run.oneToOneGrpc,
      "1:1 sustained msgs/s, ours over gRPC Session streams (one HTTP/2 connection each)",
      grpcOnlyOurs,
      "1:1 over gRPC",
    ),
    ...oursOnlyRamp(
      run.oneToOneSplit,
      "1:1 sustained msgs/s, ours split: a core and two edge processes, soft state in Redis (WebSocket; the two members of each pair on different edges)",
      splitOnlyOurs,
      "1:1 split",
    ),
    ...oursOnlyRamp(
      run.oneToOneCassandra,
      "1:1 sustained msgs/s, ours with its store in Cassandra (one server process and a single-node Cassandra 5.0 on the same machine; WebSocket)",
      cassandraOnlyOurs,
      "1:1 on Cassandra",
    ),
    ...oursOnlyRamp(
      run.oneToOnePulsar,
      "1:1 sustained msgs/s, ours with its log in Pulsar (one server process, events in SQLite, and a standalone Pulsar 4.0 on the same machine; WebSocket)",
      pulsarOnlyOurs,
      "1:1 on Pulsar",
    ),
    ...oursOnlyRamp(
      run.oneToOneConnect,
      "1:1 sustained msgs/s, ours from web apps' Connect clients (Subscribe + a unary Send per message, one HTTP/2 connection each)",
      connectOnlyOurs,
      "1:1 over Connect",
    ),
    {
      scenario: "groupFanout",
      label: `Group fan-out sustained deliveries/s (p99 ≤ ${fmtNum((run.groupFanout.sloP99Us ?? SLO_P99_US) / 1000)} ms)`,
      values: valuesOf(run.groupFanout.results, (r) => r.sustainedDeliveriesPerSec),
      format: int,
    },
    {
      scenario: "idle",
      label: "Idle sessions held, one socket each",
      values: valuesOf(socketIdle(run), (r) => r.held),
      format: int,
    },
    {
      scenario: "idle",
      label: "Idle RSS per connection, KB (lower is better)",
      values: valuesOf(socketIdle(run), (r) => r.rssPerConnBytes),
      format: fmtKb,
    },
    {
      scenario: "idle",
      label: "Idle sessions held as gRPC streams on shared HTTP/2 connections",
      values: valuesOf(streamIdles, (r) => r.held),
      format: int,
      oursOnly: streamsOnlyOurs,
    },
    {
      scenario: "idle",
      label: "Idle RSS per gRPC stream session, KB (lower is better)",
      values: valuesOf(streamIdles, (r) => r.rssPerConnBytes),
      format: fmtKb,
      oursOnly: streamsOnlyOurs,
    },
    {
      scenario: "idle",
      label:
        "Idle RSS per gRPC Subscribe stream session (heartbeats as unary calls), KB (lower is better)",
      values: valuesOf(subscribeIdles, (r) => r.rssPerConnBytes),
      format: fmtKb,
      oursOnly: streamsOnlyOurs,
    },
    {
      scenario: "idle",
      label:
        "Idle RSS per Connect-protocol Subscribe stream session (a browser behind a proxy), KB (lower is better)",
      values: valuesOf(connectSubscribeIdles, (r) => r.rssPerConnBytes),
      format: fmtKb,
      oursOnly: streamsOnlyOurs,
    },
    {
      scenario: "reconnect",
      label: "Reconnect storm catch-up, ms (lower is better)",
      values: valuesOf(run.reconnect, (r) => r.catchUpMs),
      format: int,
    },
    {
      scenario: "history",
      label: "History paging events/s",
      values: valuesOf(run.history, (r) => r.paging.eventsPerSec),
      format: int,
    },
    {
      scenario: "history",
      label: "Resume (sync) events/s",
      values: valuesOf(run.history, (r) => r.resume.eventsPerSec),
      format: int,
    },
  ];
}

function renderSummary(run: BenchRun): string {
  const rows = summaryRows(run);
  const versus: TargetName[] = ["ejabberd-routing", "ejabberd-archive", "relay"];
  const headers = ["Scenario", ...TARGETS.map(code), ...versus.map((t) => `ours / ${t}`)];
  const body = rows.map((row) => [
    row.label,
    ...TARGETS.map((t) => {
      const v = row.values[t];
      return v === undefined ? "—" : row.format(v);
    }),
    ...versus.map((t) => fmtRatio(row.values.ours, row.values[t])),
  ]);
  const align = headers.map((_, i) => (i === 0 ? "l" : "r") as "l" | "r");

  // Group the "—" reasons by target and reason so the footnote stays short.
  const missing = new Map<string, { target: TargetName; reason: string; scenarios: string[] }>();
  for (const row of rows) {
    for (const t of TARGETS) {
      if (row.values[t] !== undefined) continue;
      const reason = row.oursOnly && t !== "ours" ? row.oursOnly : skipReason(run, row.scenario, t);
      const key = `${t}\u0000${reason}`;
      const entry = missing.get(key) ?? { target: t, reason, scenarios: [] };
      const title = row.oursOnly
        ? (row.oursOnlyTitle ?? "idle sessions as gRPC streams")
        : SCENARIO_TITLES[row.scenario];
      if (!entry.scenarios.includes(title)) entry.scenarios.push(title);
      missing.set(key, entry);
    }
  }
  const out = [table(headers, body, align), ""];
  out.push(
    "Ratios are ours ÷ theirs; above 1 is better for rates, below 1 for latency and memory.",
  );
  if (missing.size > 0) {
    out.push("", "— means no result:", "");
    const order = (t: TargetName) => TARGETS.indexOf(t);
    const sorted = [...missing.values()].sort((x, y) => order(x.target) - order(y.target));
    for (const m of sorted) {
      out.push(`- ${code(m.target)} (${m.scenarios.join(", ")}): ${m.reason}`);
    }
  }
  return out.join("\n");
}

type Status = "✓" | "✗" | "—";

interface TargetRow {
  goal: string;
  measured: string;
  status: Status;
}

const mark = (ok: boolean): Status => (ok ? "✓" : "✗");

/** Compares ours' sustained 1:1 rate to `factor` × another target's. */
function oneToOneGoal(run: BenchRun, other: TargetName, factor: number, goal: string): TargetRow {
  const ours = byTarget(run.oneToOne, "ours");
  const theirs = byTarget(run.oneToOne, other);
  if (!ours || !theirs) {
    const who = ours ? other : "ours";
    return { goal, measured: `no ${who} result: ${skipReason(run, "oneToOne", who)}`, status: "—" };
  }
  const a = ours.sustainedPerSec;
  const b = theirs.sustainedPerSec;
  // A ceiling the ramp never reached is a lower bound, and so is the ratio's denominator.
  const bound = ranOutOfSteps(theirs)
    ? `; ${other}'s ramp ran out of steps within the SLO, so its ceiling is at least that and the ratio at most`
    : "";
  return {
    goal,
    measured: `ours ${fmtNum(a)} vs ${other} ${fmtNum(b)} msgs/s (${fmtRatio(a, b)}${bound})`,
    status: mark(a >= factor * b),
  };
}

/** Whether the ramp's last step still met the SLO: the system's ceiling lies above the ladder. */
function ranOutOfSteps(r: RampResult): boolean {
  return r.steps.at(-1)?.withinSlo === true && r.sustainedPerSec > 0;
}

function idleGoals(run: BenchRun): TargetRow[] {
  const ours = byTarget(socketIdle(run), "ours");
  const streams = streamIdle(run);
  const sessionsGoal = "(2) Idle: ≥ 100,000 sessions on one edge process";
  const memGoal = "(2) Idle: ≤ 10 KB RSS per connection";
  if (!ours && !streams) {
    const measured = `no ours result: ${skipReason(run, "idle", "ours")}`;
    return [
      { goal: sessionsGoal, measured, status: "—" },
      { goal: memGoal, measured, status: "—" },
    ];
  }
  const heldParts: string[] = [];
  const memParts: string[] = [];
  if (ours) {
    let held = `${fmtNum(ours.held)} of ${fmtNum(ours.attempted)} WebSocket sessions held`;
    // One session is one socket, so the process fd limit caps what this machine can show.
    if (ours.held < IDLE_TARGET_SESSIONS && run.machine.fdLimit <= IDLE_TARGET_SESSIONS) {
      held += ` (one socket each: capped by the fd limit of ${fmtNum(run.machine.fdLimit)} here)`;
    }
    heldParts.push(held);
    memParts.push(
      `${fmtKb(ours.rssPerConnBytes)} KB per WebSocket session at ${fmtNum(ours.held)}`,
    );
  }
  if (streams) {
    heldParts.push(
      `${fmtNum(streams.held)} of ${fmtNum(streams.attempted)} gRPC stream sessions held on ${fmtNum(streams.connections ?? 0)} HTTP/2 connections`,
    );
    memParts.push(
      `${fmtKb(streams.rssPerConnBytes)} KB per gRPC stream session at ${fmtNum(streams.held)}`,
    );
  }
  const all = [ours, streams].filter((r): r is IdleResult => r !== undefined);
  return [
    {
      goal: sessionsGoal,
      measured: heldParts.join("; "),
      status: mark(all.some((r) => r.held >= IDLE_TARGET_SESSIONS)),
    },
    {
      goal: memGoal,
      measured: memParts.join("; "),
      status: mark(all.every((r) => r.held > 0 && r.rssPerConnBytes <= IDLE_TARGET_BYTES_PER_CONN)),
    },
  ];
}

function groupGoals(run: BenchRun): TargetRow[] {
  const goal = "(3) Group fan-out deliveries/s ≥ 2× ejabberd MUC";
  const ours = byTarget(run.groupFanout.results, "ours");
  const ejabberd = run.groupFanout.results.filter((r) => r.target.startsWith("ejabberd-"));
  if (ejabberd.length === 0) {
    const reasons = TARGETS.filter((t) => t.startsWith("ejabberd-")).map(
      (t) => `${t}: ${skipReason(run, "groupFanout", t)}`,
    );
    return [{ goal, measured: `no ejabberd result (${reasons.join("; ")})`, status: "—" }];
  }
  return ejabberd.map((theirs) => {
    const g = `${goal} (${theirs.target})`;
    if (!ours) {
      const measured = `no ours result: ${skipReason(run, "groupFanout", "ours")}`;
      return { goal: g, measured, status: "—" };
    }
    const a = ours.sustainedDeliveriesPerSec;
    const b = theirs.sustainedDeliveriesPerSec;
    const vs = `${theirs.target} ${fmtNum(b)}`;
    return {
      goal: g,
      measured: `ours ${fmtNum(a)} vs ${vs} deliveries/s (${fmtRatio(a, b)})`,
      status: mark(a >= 2 * b),
    };
  });
}

function reconnectGoal(run: BenchRun): TargetRow {
  const goal = "(4) Reconnect storm: 10,000 clients caught up ≤ 10 s, 0 lost, 0 duplicated";
  const r = byTarget(run.reconnect, "ours");
  if (!r) {
    return {
      goal,
      measured: `no ours result: ${skipReason(run, "reconnect", "ours")}`,
      status: "—",
    };
  }
  let measured =
    `${fmtNum(r.caughtUp)}/${fmtNum(r.clients)} caught up in ${fmtNum(r.catchUpMs)} ms, ` +
    `${fmtNum(r.lost)} lost, ${fmtNum(r.duplicated)} duplicated`;
  if (r.clients < RECONNECT_TARGET_CLIENTS) {
    measured += `; only ${fmtNum(r.clients)} clients ran`;
  }
  const ok =
    r.clients >= RECONNECT_TARGET_CLIENTS &&
    r.caughtUp === r.clients &&
    r.catchUpMs <= RECONNECT_TARGET_MS &&
    r.lost === 0 &&
    r.duplicated === 0;
  return { goal, measured, status: mark(ok) };
}

/** CPU per message in a target's 1:1 step at `rate`, for the system under test and the load generator. */
/**
 * A system's CPU at `rate` msgs/s: its step at that rate, or else a straight
 * line between its steps either side (ramps skip rates well under a system's
 * ceiling), with the rates it was read between.
 */
function costAt(run: BenchRun, name: TargetName, rate: number) {
  const steps = (byTarget(run.oneToOne, name)?.steps ?? []).filter((s) => s.targetCpuPct);
  const exact = steps.find((s) => s.offeredPerSec === rate);
  const below = steps.filter((s) => s.offeredPerSec < rate).at(-1);
  const above = steps.find((s) => s.offeredPerSec > rate);
  let serverPct: number;
  let loadGenPct: number;
  let eventLoopPct: number | undefined;
  let between: [number, number] | undefined;
  if (exact) {
    serverPct = exact.targetCpuPct ?? 0;
    loadGenPct = exact.loadGenCpuPct ?? 0;
    eventLoopPct = exact.eventLoopCpuPct;
  } else if (below && above) {
    const f = (rate - below.offeredPerSec) / (above.offeredPerSec - below.offeredPerSec);
    const mix = (a: number | undefined, b: number | undefined) =>
      (a ?? 0) + f * ((b ?? 0) - (a ?? 0));
    serverPct = mix(below.targetCpuPct, above.targetCpuPct);
    loadGenPct = mix(below.loadGenCpuPct, above.loadGenCpuPct);
    if (below.eventLoopCpuPct !== undefined && above.eventLoopCpuPct !== undefined) {
      eventLoopPct = mix(below.eventLoopCpuPct, above.eventLoopCpuPct);
    }
    between = [below.offeredPerSec, above.offeredPerSec];
  } else {
    return undefined;
  }
  const perMsg = (pct: number) => (pct * 10_000) / rate;
  return {
    serverPct,
    loadGenPct,
    eventLoopPct,
    serverUs: perMsg(serverPct),
    loadGenUs: perMsg(loadGenPct),
    between,
  };
}

/**
 * What CPU per message each missed 1:1 target leaves ours' server and the
 * load generator together (the machine's cores over the target's rate),
 * against what the two spent at ours' ceiling, with every cycle in use.
 */
function renderBudget(
  run: BenchRun,
  ours: NonNullable<ReturnType<typeof costAt>>,
  rate: number,
  over: RateStep | undefined,
): string[] {
  const cores = run.machine.cores;
  const ejabberdRate = byTarget(run.oneToOne, "ejabberd-routing")?.sustainedPerSec ?? 0;
  const halfRelay = (byTarget(run.oneToOne, "relay")?.sustainedPerSec ?? 0) / 2;
  const spent = ours.serverUs + ours.loadGenUs;
  const goals = [
    {
      label: `ejabberd's routing-only rate, ${fmtNum(ejabberdRate)} msgs/s`,
      short: "ejabberd's rate",
      need: ejabberdRate,
    },
    {
      label: `half the relay's rate, ${fmtNum(halfRelay)} msgs/s`,
      short: "half the relay's rate",
      need: halfRelay,
    },
  ].filter((g) => g.need > rate);
  if (goals.length === 0 || spent <= 0) return [];
  let roomy = false;
  const parts = goals.map((g, i) => {
    const budget = (cores * 1_000_000) / g.need;
    // On a slow day the cores can leave more than ours spent: then CPU is not what is short.
    const short = budget < spent;
    if (!short) roomy = true;
    const gap = short
      ? `${fmtNum((1 - budget / spent) * 100)}% less than`
      : `${fmtNum((budget / spent - 1) * 100)}% more than`;
    return (
      `at ${g.label}, ${i === 0 ? "that is " : ""}${fmtNum(budget)} µs of CPU per message` +
      (i === 0 ? " for the server and the load generator together" : "") +
      `, ${gap} ${i === 0 ? "the two spent at ours' ceiling, " : ""}` +
      (i === 0
        ? `${fmtNum(spent)} (${fmtNum(ours.serverUs)} and ${fmtNum(ours.loadGenUs)})`
        : fmtNum(spent))
    );
  });
  let text =
    `The budget: ${fmtNum(cores)} cores give ${fmtNum(cores * 100)}% of a core; ` +
    `${parts.join("; ")}. The load generator's share is part of it, and its cost per message ` +
    "falls as the rate rises, so these are rough bounds, and they take every cycle of both cores";
  const theirs = byTarget(run.oneToOne, "ejabberd-routing")?.steps.find(
    (s) => s.offeredPerSec === ejabberdRate && s.withinSlo,
  );
  const used = (s: RateStep) => (s.targetCpuPct ?? 0) + (s.loadGenCpuPct ?? 0);
  if (theirs?.targetCpuPct !== undefined && theirs.loadGenCpuPct !== undefined) {
    text +=
      `: at its ${fmtNum(ejabberdRate)} msgs/s ejabberd's server and the load generator used ` +
      `${fmtNum(used(theirs))}% of the ${fmtNum(cores * 100)}% (${fmtNum(theirs.targetCpuPct)}% ` +
      `and ${fmtNum(theirs.loadGenCpuPct)}%) within the SLO, ours' server and the load ` +
      `generator ${fmtNum(ours.serverPct + ours.loadGenPct)}% at ours' ceiling` +
      (over?.targetCpuPct === undefined
        ? ""
        : ` and ${fmtNum(used(over))}% at the step over the SLO`);
  }
  text += ".";
  if (roomy) {
    text +=
      " Where the budget is more than ours spent, both cores' CPU would carry ours' cost per " +
      "message to that rate, but ours' ramp broke first with CPU to spare: the tail broke it " +
      "(below), not the sum of the CPU.";
  }
  const floor = renderStoreFloor(run, goals, rate, spent);
  return floor ? ["", text, "", floor] : ["", text];
}

/**
 * What each budget leaves once the sockets are paid for, as the relay paid
 * for them at that rate, beside the store's probed floor per event: where
 * less is left than the floor, no durable ack through this store fits.
 */
function renderStoreFloor(
  run: BenchRun,
  goals: { short: string; need: number }[],
  rate: number,
  spent: number,
): string {
  const floor = run.storeFloor;
  if (!floor) return "";
  const cores = run.machine.cores;
  const lefts = goals.flatMap((g) => {
    const relay = costAt(run, "relay", g.need);
    if (!relay) return [];
    const sockets = relay.serverUs + relay.loadGenUs;
    return [{ ...g, relay, left: (cores * 1_000_000) / g.need - sockets, sockets }];
  });
  if (lefts.length === 0) return "";
  const parts = lefts.map(
    (g, i) =>
      `${fmtNum(g.sockets)}${i === 0 ? " µs per message" : ""} at ${g.short} ` +
      `(${fmtNum(g.relay.serverUs)} and ${fmtNum(g.relay.loadGenUs)}` +
      (g.relay.between
        ? `, between its ${fmtNum(g.relay.between[0])} and ${fmtNum(g.relay.between[1])} msgs/s steps`
        : "") +
      `), leaving ${g.left > 0 ? fmtNum(g.left) : "nothing"}${i === 0 ? " µs of the budget" : ""}`,
  );
  const short = lefts.filter((g) => g.left < floor.cpuUsPerEvent);
  // What ours adds, read at its own ceiling against the relay at the same rate.
  const relayHere = costAt(run, "relay", rate);
  const relayHereUs = relayHere ? relayHere.serverUs + relayHere.loadGenUs : 0;
  const added =
    relayHere && spent > relayHereUs
      ? ` At ours' ceiling, ${fmtNum(rate)} msgs/s, ours and the load generator spent ` +
        `${fmtNum(spent - relayHereUs)} µs per message more than the relay and the load ` +
        `generator at that rate (${fmtNum(spent)} against ${fmtNum(relayHereUs)}).`
      : "";
  return (
    "Sockets are paid for first, and the relay shows what they cost: its server and the load " +
    `generator spent ${parts.join(", and ")}, for everything ours adds to a message (authorization, sequencing, ` +
    `durability, its framing).${added} Ours' store alone spent ` +
    `${fmtNum(floor.cpuUsPerEvent)} µs of CPU per event at its cheapest, ` +
    `${fmtNum(floor.eventsPerCommit)} events per commit with nothing else running ` +
    "(a probe before ours' 1:1 ramp, bench/lib/store-floor.ts)" +
    (short.length > 0
      ? `, so at ${short.map((g) => g.short).join(" and ")} a durable ack through this store ` +
        "does not fit in the cores even if ours did nothing else per message."
      : ": the store's floor fits in each budget, and the rest of ours' work per message has " +
        "to fit in what remains.")
  );
}

/** Why the 1:1 targets that were missed were missed, from this run's CPU readings. */
function renderBounds(run: BenchRun): string[] {
  const rate = byTarget(run.oneToOne, "ours")?.sustainedPerSec ?? 0;
  const ours = costAt(run, "ours", rate);
  if (!ours) return [];
  const relay = costAt(run, "relay", rate);
  const out = ["### What bounds 1:1 throughput", ""];
  const line = (name: string, c: NonNullable<typeof ours>) =>
    `- ${code(name)}: the server used ${fmtNum(c.serverPct)}% of a core ` +
    `(${fmtNum(c.serverUs)} µs of CPU per message` +
    (c.eventLoopPct === undefined
      ? ""
      : `; its event loop, the main thread, ${fmtNum(c.eventLoopPct)}% of a core`) +
    "), the load generator " +
    `${fmtNum(c.loadGenPct)}% (${fmtNum(c.loadGenUs)} µs per message)` +
    (c.between
      ? `, read off a straight line between its ${fmtNum(c.between[0])} and ` +
        `${fmtNum(c.between[1])} msgs/s steps.`
      : ".");
  out.push(
    `At ${fmtNum(rate)} msgs/s, the highest rate ours sustained, on ${fmtNum(run.machine.cores)} cores:`,
    "",
    line("ours", ours),
  );
  if (relay) out.push(line("relay", relay));
  const ejabberd = costAt(run, "ejabberd-routing", rate);
  if (ejabberd) out.push(line("ejabberd-routing", ejabberd));
  if (relay && relay.serverUs > 0) {
    const relayRate = byTarget(run.oneToOne, "relay")?.sustainedPerSec ?? 0;
    const relayTop = relayRate > rate ? costAt(run, "relay", relayRate) : undefined;
    out.push(
      "",
      `A durable, authorized, sequenced message costs ours ${fmtRatio(ours.serverUs, relay.serverUs)} ` +
        "the CPU of a bare relay message. Both run out of the same cores, which the load " +
        "generator shares, so the ratio of sustained rates follows the ratio of CPU per message" +
        (relayTop && relayTop.serverUs < relay.serverUs
          ? `, and goes further as the relay's cost per message falls with its load (` +
            `${fmtNum(relayTop.serverUs)} µs, and the load generator's ` +
            `${fmtNum(relayTop.loadGenUs)}, at its ${fmtNum(relayRate)} msgs/s).`
          : "."),
    );
  }
  const ejabberdRate = byTarget(run.oneToOne, "ejabberd-routing")?.sustainedPerSec ?? 0;
  const ejabberdTop = costAt(run, "ejabberd-routing", ejabberdRate);
  if (ejabberd && ejabberd.serverUs > 0 && ejabberdRate > 0) {
    out.push(
      "",
      `At this rate ejabberd's routing-only server spent ${fmtNum(ejabberd.serverUs)} µs of ` +
        `CPU per message against ours' ${fmtNum(ours.serverUs)}, and it sustained ` +
        `${fmtNum(ejabberdRate)} msgs/s` +
        (ejabberdTop && ejabberdRate > rate
          ? `, spending ${fmtNum(ejabberdTop.serverUs)} µs per message there`
          : "") +
        ". Its schedulers run that work on both cores; " +
        (ours.eventLoopPct === undefined
          ? "most of ours runs on one event loop (below)."
          : `of ours' ${fmtNum(ours.serverPct)}%, ${fmtNum(ours.eventLoopPct)}% runs on its ` +
            "one event loop (below)."),
    );
  }
  const over = byTarget(run.oneToOne, "ours")?.steps.find(
    (s) => !s.withinSlo && s.offeredPerSec > rate && s.eventLoopCpuPct !== undefined,
  );
  if (over && ours.eventLoopPct !== undefined) {
    out.push(
      "",
      `At ${fmtNum(over.offeredPerSec)} msgs/s, the step over the SLO that ended ours' ramp, ` +
        `its event loop used ${fmtNum(over.eventLoopCpuPct ?? 0)}% of a core (` +
        `${fmtNum(ours.eventLoopPct)}% at ${fmtNum(rate)})` +
        (over.eventLoopWaitPct === undefined
          ? ""
          : ` and waited for a CPU, runnable, ${fmtNum(over.eventLoopWaitPct)}% of the time`) +
        `; the whole server used ${fmtNum(over.targetCpuPct ?? 0)}% and the load generator ` +
        `${fmtNum(over.loadGenCpuPct ?? 0)}%` +
        (over.loadGenWaitPct === undefined
          ? ""
          : ` (each of its event loops waited ${fmtNum(over.loadGenWaitPct)}% of the time)`) +
        `, of the machine's ${fmtNum(run.machine.cores * 100)}%. Shares are read from each ` +
        "thread's CPU time over the step's sending, waits from the scheduler's run-queue " +
        "time (/proc schedstat).",
    );
  }
  out.push(...renderBudget(run, ours, rate, over));
  const disk = oursDiskProbe(run);
  if (disk) {
    out.push(
      "",
      `Just before ours' ramp the disk took ${fmtMs(disk.p50Us)} ms at p50 and ` +
        `${fmtMs(disk.p99Us)} ms at p99 (${fmtMs(disk.maxUs)} at most) for a 4 KiB write ` +
        "and fdatasync; every ack of ours waits for one such commit, shared by the events " +
        "batched into it. A probe is a snapshot: this VM's disk moves within minutes (about " +
        "0.2–0.5 ms at p99 when calm, spikes of a few ms between probes of one run), and a " +
        "short spike costs a step at most. In two runs on 2026-12-06 ours sustained only " +
        "1,000 and 3,000 msgs/s with its CPU far from full while ejabberd's archive on " +
        "PostgreSQL, which commits to the same disk, fell to 0 and 2,000: a disk slow for " +
        "minutes.",
    );
  }
  out.push("", ...boundsInShort());
  return out;
}

function renderTargets(run: BenchRun): string {
  const rows: TargetRow[] = [
    oneToOneGoal(run, "ejabberd-routing", 1, "(1) 1:1 sustained ≥ ejabberd routing-only"),
    oneToOneGoal(run, "ejabberd-archive", 3, "(1) 1:1 sustained ≥ 3× ejabberd archive"),
    oneToOneGoal(run, "relay", 0.5, "(1) 1:1 sustained ≥ 50% of relay"),
    ...idleGoals(run),
    ...groupGoals(run),
    reconnectGoal(run),
  ];
  return table(
    ["Target", "Measured", "Status"],
    rows.map((r) => [r.goal, r.measured, r.status]),
  );
}

// ---------------------------------------------------------------------------
// Sections

function latencyCells(l: LatencySummary | undefined): string[] {
  if (!l) return ["—", "—", "—"];
  return [fmtMs(l.p50), fmtMs(l.p99), fmtMs(l.p999)];
}

function stepsTable(steps: readonly RateStep[], withDeliveries: boolean): string {
  // Node systems (ours, the relay) also show their main thread: the event loop.
  const withEventLoop = steps.some((s) => s.eventLoopCpuPct !== undefined);
  const headers = [
    "Offered/s",
    "Achieved/s",
    ...(withDeliveries ? ["Deliveries/s"] : []),
    "Ack p50 ms",
    "Ack p99 ms",
    "Ack p99.9 ms",
    "Deliver p50 ms",
    "Deliver p99 ms",
    "Deliver p99.9 ms",
    "Missing",
    "Server CPU %",
    ...(withEventLoop ? ["Event loop CPU %"] : []),
    "Load gen CPU %",
    "Within SLO",
  ];
  const rows = steps.map((s) => [
    `${fmtNum(s.offeredPerSec)}${s.retriedAfterP99 === undefined ? "" : " †"}`,
    fmtNum(s.achievedPerSec),
    ...(withDeliveries ? [fmtNum(s.deliveriesPerSec)] : []),
    ...latencyCells(s.ack),
    ...latencyCells(s.deliver),
    fmtNum(s.missing),
    s.targetCpuPct === undefined ? "—" : fmtNum(s.targetCpuPct),
    ...(withEventLoop ? [s.eventLoopCpuPct === undefined ? "—" : fmtNum(s.eventLoopCpuPct)] : []),
    s.loadGenCpuPct === undefined ? "—" : fmtNum(s.loadGenCpuPct),
    s.withinSlo ? "✓" : "✗",
  ]);
  const align = headers.map((_, i) => (i === headers.length - 1 ? "l" : "r") as "l" | "r");
  const notes = steps.flatMap((s) =>
    s.retriedAfterP99 === undefined
      ? []
      : [`${fmtNum(s.offeredPerSec)}/s (first attempt p99 ${fmtMs(s.retriedAfterP99)} ms)`],
  );
  if (notes.length === 0) return table(headers, rows, align);
  return [
    table(headers, rows, align),
    "",
    `† Second attempt; the first went over the SLO: ${notes.join(", ")}.`,
  ].join("\n");
}

function rampTables(
  results: readonly RampResult[],
  unit: "msgs" | "deliveries",
  headingSuffix = "",
): string[] {
  const out: string[] = [];
  for (const t of TARGETS) {
    const r = byTarget(results, t);
    if (!r) continue;
    const sustained =
      unit === "msgs"
        ? `${fmtNum(r.sustainedPerSec)} msgs/s`
        : `${fmtNum(r.sustainedDeliveriesPerSec)} deliveries/s ` +
          `(${fmtNum(r.sustainedPerSec)} msgs/s)`;
    const more = ranOutOfSteps(r)
      ? " The ramp ran out of steps before this system went over the SLO: its ceiling is at least this."
      : "";
    out.push(`#### ${code(t)}${headingSuffix}`, "", `Sustained: **${sustained}**.${more}`, "");
    out.push(r.steps.length > 0 ? stepsTable(r.steps, unit === "deliveries") : "No steps ran.");
    out.push("");
  }
  return out;
}

function chartRef(chartFiles: Record<string, string>, key: ChartKey, alt: string): string[] {
  const file = chartFiles[key];
  return file === undefined ? [] : [`![${alt}](${file})`, ""];
}

function withAbsent(out: string[], run: BenchRun, scenario: ScenarioKey): void {
  const note = absentNote(run, scenario);
  if (note) out.push(note, "");
}

function renderOneToOne(run: BenchRun, chartFiles: Record<string, string>): string[] {
  const rs = run.rampStep;
  const warm = rs?.warmUp;
  const step = rs
    ? ` Each step sends for ${fmtDuration(rs.sendMs)}, then waits for late acks and deliveries` +
      (rs.earlyEnd
        ? ` until every message is in, at most ${fmtDuration(rs.graceMs)}.`
        : ` for ${fmtDuration(rs.graceMs)}.`) +
      (warm
        ? ` Before the first step an unrecorded warm-up sends for ${fmtDuration(warm.ms)} at ` +
          `${warm.at === "second" ? "the second rate" : "half the first rate"} (the JIT, ` +
          "buffers and caches, as on a server that has run a while)."
        : " Before the first step an unrecorded warm-up sent for 2 s at half the first rate; " +
          "too short, it left the first steps' CPU about half again as high as the same rate " +
          "read later in a ramp.")
    : "";
  const eventLoopRead = run.oneToOne.some((r) =>
    r.steps.some((s) => s.eventLoopCpuPct !== undefined),
  );
  const cpuWindow = rs?.earlyEnd
    ? "while the step sends (not over its wait, so it is the load the rate puts on each)"
    : "over the step, its sending and its wait together (results from before CPU was read " +
      "over the sending alone: the same load reads lower the longer the wait)";
  const out = [
    "## 1:1 chat",
    "",
    "Pairs of clients send direct messages on an open-loop schedule: each message has an " +
      "intended send time fixed in advance, and the generator does not wait for replies. " +
      "Latency is measured from that intended time, so when a server falls behind its " +
      "queueing shows up in the numbers instead of silently slowing the generator " +
      `(coordinated omission). The offered rate ramps up in steps.${step} **Sustained** is the ` +
      "highest step with p99 send→deliver ≤ 50 ms over every message sent in it, a message " +
      "not delivered by the end of the step's wait counting as later than that. While a " +
      "step is far under that (p99 ≤ 12.5 ms, nothing missing), the ramp skips the next " +
      "rate, and runs it only if the step above it misses; so a table may lack a rate well " +
      "below the system's ceiling, never the one just under it. A step over the SLO runs " +
      "once more and the second attempt stands, so that one stall of this shared machine " +
      "does not end a ramp. Before a second attempt or a skipped rate runs, the system's " +
      "backlog drains: at least 2 s, then until its CPU is back under 20% of a core (at " +
      "most 30 s). All of this applies to every system alike.",
    "",
    "*Ack* is intended send → the server's durable acknowledgement (absent for targets " +
      "without one); *deliver* is intended send → arrival on the recipient's socket; " +
      "*missing* counts messages not delivered when the step's grace period ended. CPU is " +
      `in % of one core ${cpuWindow}: the system under test's process, ` +
      (eventLoopRead
        ? "for ours and the relay also its main thread (the event loop; the rest is ours' " +
          "SQLite writer thread, the garbage collector's helpers and libuv's pool), "
        : "") +
      "and the two load-generator processes together (above ~100% the generator is the " +
      "bottleneck).",
    "",
  ];
  out.push(...chartRef(chartFiles, "oneToOne", "1:1 p99 send→deliver by offered rate"));
  if (run.oneToOne.length === 0) out.push("No 1:1 results in this run.", "");
  out.push(...rampTables(run.oneToOne, "msgs"));
  const notes = notesList(run.oneToOne);
  if (notes.length > 0) out.push(...notes, "");
  out.push(...oursVariantsOneToOne(run));
  withAbsent(out, run, "oneToOne");
  return out;
}

/** Ours' 1:1 ramps again over its other client transports, each shown beside the WebSocket ramp. */
const oursVariants = [
  {
    results: (run: BenchRun) => run.oneToOneGrpc,
    title: "Ours over gRPC",
    tables: " over gRPC Session streams",
    over: "over gRPC",
    what:
      "The same ramp for ours with every client holding a gRPC `ChatService/Session` stream " +
      "on an HTTP/2 connection of its own, as a native app built on the generated gRPC " +
      "client connects (one socket per client, as above; the relay and ejabberd have no " +
      "gRPC transport, so this run is ours only).",
  },
  {
    results: (run: BenchRun) => run.oneToOneConnect,
    title: "Ours from web apps' Connect clients",
    tables: " from Connect clients",
    over: "from Connect clients",
    what:
      "The same ramp for ours with every client as a web app's Connect client reaches it " +
      "through a proxy: a Connect-protocol `ChatService/Subscribe` call for what it receives, " +
      "and a unary Connect `Send` call for each message it sends, on an HTTP/2 connection of " +
      "its own (fetch cannot stream a request, so each message is a call with its own HTTP/2 " +
      "stream and headers, for the load generator as for the server; ours only).",
  },
  {
    results: (run: BenchRun) => run.oneToOneSplit,
    title: "Ours split: a core and two edges",
    tables: " split over a core and two edges",
    over: "split over a core and two edges, whose CPU is every process's, Redis' included,",
    what:
      "The same ramp for ours as a split deployment (docs/ARCHITECTURE.md, *Split deployment*): " +
      "a core process (router and store on SQLite) and two edge processes, which call it over " +
      "one HTTP/2 connection each (lib/internal-http2.ts) and share the registry, the edge bus " +
      "and presence in the machine's Redis. Clients " +
      "connect over WebSocket as above, spread over the edges so that the two members of each " +
      "pair sit on different edges: every message goes from one edge to the core, is committed, " +
      "and reaches the other edge through Redis. CPU is the core's, both edges' and Redis' " +
      "together, and there is no one event loop to show. On two cores the extra processes and " +
      "hops cost more than they spread; the split is for more cores and more machines (ours only).",
  },
  {
    results: (run: BenchRun) => run.oneToOneCassandra,
    title: "Ours with its store in Cassandra",
    tables: " with the store in Cassandra",
    over: "with its store in Cassandra, whose CPU is the server's and Cassandra's together,",
    what:
      "The same ramp for ours as one server process whose events and metadata live in " +
      "Cassandra instead of SQLite (docs/ARCHITECTURE.md, *Events in Cassandra*): a " +
      "single-node Cassandra 5.0 (assembled from Maven Central, 1 GB heap) on the same two " +
      "cores. Every message takes its seq with a lightweight transaction (a Paxos round on " +
      "its conversation's partition) and then writes its idempotency key and what it changes, " +
      "where SQLite commits a whole batch with one fsync. CPU is the server's and Cassandra's " +
      "together. One node " +
      "on two cores shows what a message costs, not what a cluster sustains. The node is the " +
      "tests' (scripts/install-cassandra.sh, test/helpers/dev-env.ts), with its commit log in " +
      "batch mode: a write is acknowledged once the commit log holding it is fsync'd, as " +
      "durable acks need, and a send is a chain of such writes (ours only).",
    extra: (run: BenchRun) => {
      const f = run.cassandraFloor;
      if (!f) return undefined;
      const cassandra =
        f.cassandraCpuUsPerEvent === undefined
          ? ""
          : `${fmtNum(f.cassandraCpuUsPerEvent)} µs of Cassandra's CPU and `;
      return (
        `After the ramp the store alone (bench/lib/cassandra-floor.ts: ${fmtNum(f.conversations)} ` +
        "direct conversations committing keyed messages side by side through the Cassandra store, " +
        "no sockets, no router) committed " +
        `${fmtNum(f.eventsPerSec)} messages/s with the node saturated, at ${cassandra}` +
        `${fmtNum(f.serverCpuUsPerEvent)} µs of the committing process's per message: what ` +
        "storing a message costs before delivery, receipts and the sessions add theirs."
      );
    },
  },
  {
    results: (run: BenchRun) => run.oneToOnePulsar,
    title: "Ours with its log in Pulsar",
    tables: " with the log in Pulsar",
    over: "with its log in Pulsar, whose CPU is the server's and the broker's together,",
    what:
      "The same ramp for ours as one server process whose message log is a standalone " +
      "Pulsar 4.0 (assembled from Maven Central, 768 MB heap, one bookie whose journal is " +
      "synced before it acknowledges) on the same two cores, events still in SQLite " +
      "(docs/ARCHITECTURE.md, *The log in Pulsar*). A send is acknowledged once the broker " +
      "holds it, and delivered then; the store consumes the topic and commits after. Every " +
      "message crosses the broker's WebSocket API twice (in from the router, out to the " +
      "store) and its key is read from the store before its seq is taken. CPU is the " +
      "server's and the broker's together. One broker on two cores shows what a message " +
      "costs, not what a cluster sustains (ours only).",
  },
] as const;

function oursVariantsOneToOne(run: BenchRun): string[] {
  const ws = byTarget(run.oneToOne, "ours");
  const sustainedStep = (r: RampResult) =>
    r.steps.find((s) => s.withinSlo && s.offeredPerSec === r.sustainedPerSec);
  /** "N msgs/s at M µs of server CPU per message (the load generator K)", as far as known. */
  const cost = (r: RampResult, long: boolean) => {
    const step = sustainedStep(r);
    const per = (pct: number | undefined) =>
      pct === undefined || r.sustainedPerSec === 0
        ? undefined
        : fmtNum((pct * 10_000) / r.sustainedPerSec);
    const server = per(step?.targetCpuPct);
    const gen = per(step?.loadGenCpuPct);
    return (
      `${fmtNum(r.sustainedPerSec)} msgs/s` +
      (server === undefined
        ? ""
        : ` at ${server} µs${long ? " of server CPU per message" : ""}` +
          (gen === undefined ? "" : ` (the load generator ${gen})`))
    );
  };
  const out: string[] = [];
  for (const v of oursVariants) {
    const r = byTarget(v.results(run) ?? [], "ours");
    if (!r) continue;
    const compare =
      ws === undefined
        ? ""
        : ` Over WebSocket the same server sustained ${cost(ws, true)}; ${v.over} ${cost(r, false)}.`;
    const extra = "extra" in v ? v.extra(run) : undefined;
    out.push(
      `### ${v.title}`,
      "",
      `${v.what}${compare}${extra ? ` ${extra}` : ""}`,
      "",
      ...rampTables([r], "msgs", v.tables),
      ...(notesList([r]).length > 0 ? [...notesList([r]), ""] : []),
    );
  }
  return out;
}

function renderGroup(run: BenchRun, chartFiles: Record<string, string>): string[] {
  const g = run.groupFanout;
  const out = [
    "## Group fan-out",
    "",
    `${g.groups === 1 ? "One group" : `${fmtNum(g.groups)} groups`} of ` +
      `${fmtNum(g.groupSize)} members; every message is ` +
      `delivered to the ${fmtNum(Math.max(g.groupSize - 1, 0))} other members. The ramp works ` +
      "as for 1:1, with rates counted in messages offered and deliveries made; sustained is " +
      `the highest step with p99 send→deliver ≤ ${fmtNum((g.sloP99Us ?? SLO_P99_US) / 1000)} ms ` +
      "(the issue sets no bound for fan-out; writing one message to 500 sockets costs even " +
      "the raw relay's load generator about 35 ms at p99 here), deliveries still missing " +
      "counting as later.",
    "",
  ];
  out.push(...chartRef(chartFiles, "groupFanout", "Group fan-out p99 deliver by deliveries/s"));
  if (g.results.length === 0) out.push("No group fan-out results in this run.", "");
  out.push(...rampTables(g.results, "deliveries"));
  const notes = notesList(g.results);
  if (notes.length > 0) out.push(...notes, "");
  withAbsent(out, run, "groupFanout");
  return out;
}

function idleTable(results: readonly IdleResult[]): string {
  const headers = [
    "Target",
    "Sessions as",
    "Attempted",
    "Held",
    "RSS base MB",
    "RSS held MB",
    "KB / session",
    "Heartbeat",
    "Hold",
    "Server CPU % while held",
    "Connect rate/s",
  ];
  // One socket per session first, then the stream forms, whatever order they ran in.
  const rank = (r: IdleResult) =>
    [undefined, "grpc-streams", "grpc-subscribe-streams", "connect-subscribe-streams"].indexOf(
      r.transport,
    );
  const rows = TARGETS.flatMap((t) =>
    results
      .filter((r) => r.target === t)
      .sort((a, b) => rank(a) - rank(b))
      .map((r) => [
        code(t),
        r.transport === undefined
          ? "one socket each"
          : `${isConnectSubscribes(r) ? "Connect Subscribe" : isSubscribes(r) ? "gRPC Subscribe" : "gRPC Session"} streams, ${fmtNum(r.connections ?? 0)} HTTP/2 connections`,
        fmtNum(r.attempted),
        fmtNum(r.held),
        fmtMb(r.rssBaseBytes),
        fmtMb(r.rssHeldBytes),
        fmtKb(r.rssPerConnBytes),
        fmtDuration(r.heartbeatIntervalMs),
        fmtDuration(r.holdMs),
        r.holdCpuPct === undefined ? "—" : fmtNum(r.holdCpuPct),
        fmtNum(r.connectPerSec),
      ]),
  );
  return table(
    headers,
    rows,
    headers.map((_, i) => (i <= 1 ? "l" : "r")),
  );
}

/** Server CPU per heartbeat while held: the hold's whole cost over the heartbeats it carried. */
function usPerHeartbeat(r: IdleResult): number | undefined {
  // A hold shorter than one interval carried fewer heartbeats than this assumes.
  if (r.holdCpuPct === undefined || r.held === 0 || r.holdMs < r.heartbeatIntervalMs) {
    return undefined;
  }
  const perSec = r.held / (r.heartbeatIntervalMs / 1000);
  return ((r.holdCpuPct / 100) * 1e6) / perSec;
}

/** What keeping ours' sessions alive costs per heartbeat, by how they heartbeat. */
function heartbeatCostText(results: readonly IdleResult[]): string | undefined {
  const ours = results.filter((r) => r.target === "ours");
  const runs = [
    [
      ours.find((r) => r.transport === "grpc-streams"),
      "gRPC Session streams heartbeating on their streams",
    ],
    [ours.find(isSubscribes), "gRPC Subscribe calls heartbeating with gRPC unary calls"],
    [
      ours.find(isConnectSubscribes),
      "Connect-protocol Subscribe calls heartbeating with Connect unary calls",
    ],
  ] as const;
  const parts = runs.flatMap(([r, what]) => {
    const us = r && usPerHeartbeat(r);
    return r && us !== undefined
      ? [
          `${fmtNum(r.held)} ${what}, ${fmtNum(r.holdCpuPct ?? 0)}% of a core (about ` +
            `${fmtNum(us)} µs per heartbeat)`,
        ]
      : [];
  });
  if (parts.length < 2) return undefined;
  return (
    "Keeping sessions alive costs CPU too, here as the server's CPU during the hold over the " +
    `heartbeats it carried (everything the hold costs included): ${parts.join("; ")}. Session ` +
    "streams and unary `Heartbeat` calls (gRPC, gRPC-Web and Connect's unary protocol) are " +
    "served on the direct path. A unary heartbeat still costs several in-stream ones: each " +
    "is a new HTTP/2 stream with its own headers, and a CPU profile of the hold shows Node's " +
    "HTTP/2 stream handling and garbage collection as its largest items (the token's " +
    "signature is checked once per token, not per call: see the profiling table)."
  );
}

function renderIdle(run: BenchRun, chartFiles: Record<string, string>): string[] {
  const out = [
    "## Idle connections",
    "",
    "Sessions are opened and then held idle with heartbeats only. RSS per session is " +
      "(RSS at the end of the hold − RSS before any session) ÷ sessions held; 1 KB = 1,024 " +
      `bytes. The open-file limit on this machine is ${fmtNum(run.machine.fdLimit)} (hard, and ` +
      "not raisable here), and in the comparable run each session is one socket, so no system " +
      "can hold more sessions than that. Ours then runs once more with each session a gRPC " +
      "`Session` stream and many streams to an HTTP/2 connection, as the edge sees clients " +
      "behind a proxy (Envoy carries its downstream clients on a few upstream HTTP/2 " +
      "connections): every session is still authenticated, subscribed and heartbeating on its " +
      "own, but the sockets no longer bound the count. A third run holds sessions as " +
      "server-streaming `Subscribe` calls, as clients that send with unary calls hold them; " +
      "those heartbeat with a unary `Heartbeat` call each interval, so their RSS also holds " +
      "the heap that this call traffic keeps busy. A fourth makes the same calls in the " +
      "Connect protocol (binary), as a browser behind a proxy does. Every run holds its " +
      "sessions equally long: RSS depends on the hold even when live " +
      "memory does not (10,000 of ours' WebSocket sessions held 26 s and 90 s kept 62.9 and " +
      "62.8 MB of live V8 heap, but RSS read 216 and 240 MB, as the heap's committed size " +
      "and the allocator's free pages grew)." +
      (run.idleOverlapped
        ? " To keep the run short, the next run starts its system and opens its sessions, " +
          "on a second pair of load-generator processes, while the one before holds its own; " +
          "each hold still ends on time, and RSS and CPU are read per process, so neither " +
          "counts the other's. Ours' stream forms run first, then the one-socket runs of ours, " +
          "the relay and ejabberd, in that order. ejabberd runs alone, its opening and its " +
          "hold with nothing beside them: in three runs that overlapped one or the other its " +
          "RSS read 42.5, 47.2 and 47.9 KB per session, against 39–46 KB in twelve runs " +
          "before, not clearly an effect, but the anchor's figure should not carry the doubt; " +
          "ours' and the " +
          "relay's holds each have the next run's opening beside them, and every open rate but " +
          "the first and ejabberd's was taken beside another run's idle sessions and heartbeats."
        : " The runs followed one another, none overlapping."),
    "",
  ];
  out.push(...chartRef(chartFiles, "idle", "RSS per idle connection by target"));
  out.push(run.idle.length > 0 ? idleTable(run.idle) : "No idle results in this run.", "");
  const heartbeatCost = heartbeatCostText(run.idle);
  if (heartbeatCost) out.push(heartbeatCost, "");
  const notes = notesList(run.idle);
  if (notes.length > 0) out.push(...notes, "");
  withAbsent(out, run, "idle");
  return out;
}

function reconnectTable(results: readonly ReconnectResult[]): string {
  const headers = [
    "Target",
    "Clients",
    "Missed / client",
    "Catch-up ms",
    "Caught up",
    "Lost",
    "Duplicated",
    "Per-client p50 ms",
    "Per-client p99 ms",
  ];
  const rows = TARGETS.flatMap((t) => {
    const r = byTarget(results, t);
    if (!r) return [];
    return [
      [
        code(t),
        fmtNum(r.clients),
        fmtNum(r.missedPerClient),
        fmtNum(r.catchUpMs),
        fmtNum(r.caughtUp),
        fmtNum(r.lost),
        fmtNum(r.duplicated),
        fmtMs(r.perClient.p50),
        fmtMs(r.perClient.p99),
      ],
    ];
  });
  return table(
    headers,
    rows,
    headers.map((_, i) => (i === 0 ? "l" : "r")),
  );
}

function renderReconnect(run: BenchRun): string[] {
  const out = [
    "## Reconnect storm",
    "",
    "All clients disconnect, miss a burst of events, then reconnect at once. Catch-up runs " +
      "from the moment the reconnects start until the last client holds every event it " +
      "missed; lost and duplicated count events across all clients.",
    "",
  ];
  out.push(
    run.reconnect.length > 0 ? reconnectTable(run.reconnect) : "No reconnect results in this run.",
    "",
  );
  withAbsent(out, run, "reconnect");
  return out;
}

function historyTables(results: readonly HistoryResult[]): string[] {
  const present = TARGETS.flatMap((t) => {
    const r = byTarget(results, t);
    return r ? [r] : [];
  });
  const cpuHeads = ["Server CPU %", "Load gen CPU %", "Server CPU µs / event"];
  const cpuCells = (phase: HistoryResult["paging"] | HistoryResult["resume"]) => {
    const perEvent = cpuUsPerEvent(phase);
    return [
      phase.targetCpuPct === undefined ? "—" : fmtNum(phase.targetCpuPct),
      phase.loadGenCpuPct === undefined ? "—" : fmtNum(phase.loadGenCpuPct),
      perEvent === undefined ? "—" : fmtNum(perEvent, 1),
    ];
  };
  const paging = table(
    ["Target", "Page size", "Pages/s", "Events/s", "p50 ms", "p99 ms", ...cpuHeads],
    present.map((r) => [
      code(r.target),
      fmtNum(r.paging.pageSize),
      fmtNum(r.paging.pagesPerSec),
      fmtNum(r.paging.eventsPerSec),
      fmtMs(r.paging.latency.p50),
      fmtMs(r.paging.latency.p99),
      ...cpuCells(r.paging),
    ]),
    ["l", "r", "r", "r", "r", "r", "r", "r", "r"],
  );
  const resume = table(
    [
      "Target",
      "Conversations / client",
      "Events / resume",
      "Resumes/s",
      "Events/s",
      "p50 ms",
      "p99 ms",
      ...cpuHeads,
    ],
    present.map((r) => [
      code(r.target),
      fmtNum(r.resume.conversationsPerClient),
      fmtNum(r.resume.eventsPerResume),
      fmtNum(r.resume.resumesPerSec),
      fmtNum(r.resume.eventsPerSec),
      fmtMs(r.resume.latency.p50),
      fmtMs(r.resume.latency.p99),
      ...cpuCells(r.resume),
    ]),
    ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
  );
  return [
    "**Paging**: GetHistory pages walked backwards over one long conversation.",
    "",
    paging,
    "",
    "**Resume**: a device subscribes with its cursors and receives sync batches until " +
      "sync_complete.",
    "",
    resume,
    "",
    "CPU is in % of one core over each phase: the server's process, and the two " +
      "load-generator processes together, which decode every page and sync batch on the same " +
      "two cores. The server's CPU per event does not depend on how much of the cores the load " +
      "generator took, so it compares runs and revisions better than events/s.",
    "",
    "What bounds paging (a V8 CPU profile of the server over the paging window at about " +
      "380 pages/s, taken on this machine on 2026-12-06 at 706dff3): the server's event loop " +
      "was about half busy, and of its busy time about a quarter went to SQLite's reads (the " +
      "page about 18%, the conversation and the membership check about 6%), a fifth to gzip " +
      "(answers of 1 KB or more to clients that accept it; pages up to 32 KiB are compressed " +
      "in one synchronous call, see the profiling table), 5% to garbage collection, and the " +
      "rest spread thinly over HTTP/2 (headers and responses), the internal call to the store " +
      "and metrics. Pages are neither decoded nor encoded on the way (about 11% and 30% " +
      "before pages were read and written as stored), and GetHistory no longer goes through " +
      "Connect's handler (a fifth or more before; see the profiling table). The load " +
      "generator, which decodes every page with protobuf-es's reflective fromBinary, used " +
      "about 120% of a core against the server's 66% in that run, so paging here is bound by " +
      "the load generator on the shared cores more than by the server. What is left on the " +
      "server is SQLite and gzip; the access check's two reads are the only ones a page " +
      "could skip, and only by caching membership, which would let a removed member page on " +
      "for as long as the cache holds.",
    "",
  ];
}

function renderHistory(run: BenchRun): string[] {
  const out = ["## History/sync", ""];
  if (run.history.length > 0) out.push(...historyTables(run.history));
  else out.push("No history results in this run.", "");
  withAbsent(out, run, "history");
  return out;
}

/**
 * "1.50×" for rates; "2.00× less" or "1.10× more" where lower is better; —
 * without both, or where one is not positive (a memory delta that a
 * collection turned negative has no ratio).
 */
function profileChange(m: ProfileMeasure): string {
  if (!m.before || !m.after || m.before < 0 || m.after < 0) return "—";
  if (!m.lowerIsBetter) return fmtRatio(m.after, m.before);
  return m.after <= m.before
    ? `${fmtRatio(m.before, m.after)} less`
    : `${fmtRatio(m.after, m.before)} more`;
}

/** The headline numbers of the earlier full runs: how far they move from run to run. */
function renderRuns(runs: readonly RunDigest[]): string[] {
  if (runs.length < 2) return [];
  const n = (v: number | undefined) => (v === undefined ? "—" : fmtNum(v));
  const rows = runs.map((r) => [
    fmtDate(r.startedAt),
    code(r.gitCommit),
    fmtDuration(r.durationMs),
    n(r.oneToOne.ours),
    n(r.oneToOne.relay),
    n(r.oneToOne["ejabberd-routing"]),
    n(r.oneToOne["ejabberd-archive"]),
    fmtRatio(r.oneToOne.ours, r.oneToOne["ejabberd-routing"]),
    fmtRatio(r.oneToOne.ours, r.oneToOne.relay),
    n(r.group.ours),
    n(r.group["ejabberd-routing"]),
    n(r.stormMs),
    r.fsyncP99UsBeforeOurs === undefined ? "—" : fmtMs(r.fsyncP99UsBeforeOurs),
    r.cpuProbeMsBeforeOurs === undefined ? "—" : fmtNum(r.cpuProbeMsBeforeOurs, 1),
  ]);
  return [
    "## Earlier full runs",
    "",
    `The headline numbers of the last ${fmtNum(runs.length)} full runs of this bench on this ` +
      "machine, this one last (kept in `bench/runs-full.json` next to the results). Every " +
      "system's absolute rates move with the VM's speed from run to run and day to day, and " +
      "the commit column shows which revision of ours ran; compare systems within a row. " +
      "The last two columns are the disk's commit latency (p99 of a 4 KiB write and fdatasync) " +
      "just before ours' 1:1 ramp, where every ack waits for one, and the CPU probe's time at " +
      "that point (lower is a faster CPU); runs before they were recorded show —. Until the " +
      "bench waited for its load generator to load (and for a quiet machine) before each " +
      "scenario, the probe before ours' ramp, the run's first, ran while the generator's two " +
      "processes were still loading their code: it read 5–11 ms at p99 where the run's later " +
      "probes read about 0.4–0.7 ms at the median (1–5 ms at most), and the one run with a " +
      "CPU probe read 30 ms there against 16–21 ms later. Those disk readings tell of the start-up, not of the disk; " +
      "the ramp's measured steps began seconds after the loading had finished.",
    "",
    table(
      [
        "Run",
        "Commit",
        "Duration",
        "1:1 ours",
        "1:1 relay",
        "1:1 ejabberd-routing",
        "1:1 ejabberd-archive",
        "ours / ejabberd-routing",
        "ours / relay",
        "Group ours",
        "Group ejabberd MUC",
        "Storm ms",
        "Disk fsync p99 ms",
        "CPU probe ms",
      ],
      rows,
      ["l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
    ),
    "",
  ];
}

function renderProfile(profile: readonly ProfileFix[]): string[] {
  const out = ["## Profiling: before and after", ""];
  if (profile.length === 0) {
    out.push("No profiling fixes recorded for this run.", "");
    return out;
  }
  out.push(
    "Each fix was measured with the same bench scenario and sizes on the revision before it " +
      "and after it (`--server-root` runs another checkout's server under the same bench), " +
      "one revision after another in one `npm run bench:profile` (a fix added later is " +
      "measured with `--since` or `--only`, on the machine and day of that run, so compare " +
      "each fix's before with its after, not rows of different fixes). — means the revision " +
      "never got there: no 1:1 step met the SLO, or the ramp stopped before the step a " +
      "CPU reading is taken at. Every revision runs once unless its method names the " +
      "median of several alternating runs (`--rounds`): on this shared two-core machine a " +
      "revision's 1:1 sustained rate moves by a step (500 msgs/s) from run to run and " +
      "fan-out by a step of its ladder, so a one-step change either way is within noise. " +
      "CPU per message comes from a single 3-second step and moves by up to a quarter " +
      "between runs of one revision at 500 msgs/s (less at 5,000), and RSS per connection " +
      "by up to a fifth; read smaller changes in a single run as noise. Server CPU counts " +
      "the whole process, the SQLite writer thread included.",
    "",
    table(
      ["Fix", "Metric", "Before", "After", "Change"],
      profile.flatMap((fix) =>
        fix.measures.map((m, i) => [
          i === 0 ? fix.title : "",
          `${m.metric} (${m.unit})`,
          m.before ? fmtNum(m.before, m.before < 100 ? 1 : 0) : "—",
          m.after ? fmtNum(m.after, m.after < 100 ? 1 : 0) : "—",
          profileChange(m),
        ]),
      ),
    ),
    "",
  );
  for (const fix of profile)
    out.push(`- **${fix.title}**: ${fix.detail} _Measured: ${fix.method}_`);
  out.push("");
  return out;
}

function renderSkipped(run: BenchRun): string[] {
  const out = ["## Skipped", ""];
  if (run.skipped.length === 0) out.push("Nothing was skipped.", "");
  else {
    out.push(
      table(
        ["Scenario", "Target", "Reason"],
        run.skipped.map((s) => [s.scenario, code(s.target), s.reason]),
      ),
      "",
    );
  }
  return out;
}

/** Where the run's wall-clock time went: each scenario on each system, then the rest. */
function renderTimings(run: BenchRun): string[] {
  const timings = run.timings ?? [];
  if (timings.length === 0) return [];
  const title = (scenario: string) => {
    const key = scenarioOf(scenario);
    return key ? SCENARIO_TITLES[key] : scenario;
  };
  const rows = timings.map((t) => [
    title(t.scenario),
    code(t.target) + (t.variant ? ` (${t.variant})` : ""),
    fmtDuration(t.ms),
  ]);
  const spent = timings.reduce((a, t) => a + t.ms, 0);
  const rest = run.durationMs - spent;
  if (rest > 0) {
    rows.push([
      "",
      "starting the load generator, writing the results and this page",
      fmtDuration(rest),
    ]);
  }
  rows.push(["**Total**", "", `**${fmtDuration(run.durationMs)}**`]);
  const byScenario = new Map<string, number>();
  for (const t of timings) {
    const name = title(t.scenario);
    byScenario.set(name, (byScenario.get(name) ?? 0) + t.ms);
  }
  const summary = [...byScenario].map(([name, ms]) => `${name} ${fmtDuration(ms)}`).join(", ");
  return [
    "## Where the run's time went",
    "",
    "Wall-clock time of each scenario on each system, including the wait for a quiet " +
      "machine and the disk and CPU probes before it and its servers' start and stop " +
      `(${summary}).` +
      (run.idleOverlapped
        ? " Idle runs overlap (each opens while the one before holds), so an idle row " +
          "lasts until the next began."
        : ""),
    "",
    table(["Scenario", "System", "Time"], rows, ["l", "l", "r"]),
    "",
  ];
}

/** The spread of the disk probes over the run, and the one before ours' 1:1 ramp. */
function diskRow(run: BenchRun): string[][] {
  const probes = run.disk ?? [];
  if (probes.length === 0) return [];
  const p99s = probes.map((d) => d.p99Us);
  const ours = oursDiskProbe(run);
  return [
    [
      "Disk commit latency",
      `4 KiB write + fdatasync in the temp dir, p99 ${fmtMs(Math.min(...p99s))}–` +
        `${fmtMs(Math.max(...p99s))} ms over ${fmtNum(probes.length)} probes (one before each ` +
        "scenario and system)" +
        (ours
          ? `; before ours' 1:1 ramp p50 ${fmtMs(ours.p50Us)} ms, p99 ${fmtMs(ours.p99Us)} ms`
          : ""),
    ],
  ];
}

/** The spread of the CPU probes over the run, and the one before ours' 1:1 ramp. */
function cpuRow(run: BenchRun): string[][] {
  const probes = run.cpu ?? [];
  if (probes.length === 0) return [];
  const medians = probes.map((p) => p.medianMs);
  const ours = oursCpuProbe(run);
  return [
    [
      "CPU speed probe",
      `a fixed single-thread workload (bench/lib/cpu.ts; lower is faster) took ` +
        `${fmtNum(Math.min(...medians), 1)}–${fmtNum(Math.max(...medians), 1)} ms at the median ` +
        `over ${fmtNum(probes.length)} probes (one before each scenario and system)` +
        (ours ? `; before ours' 1:1 ramp ${fmtNum(ours.medianMs, 1)} ms` : ""),
    ],
  ];
}

function renderMachine(run: BenchRun): string[] {
  const m = run.machine;
  return [
    "## Machine",
    "",
    table(
      ["", ""],
      [
        ["CPU", `${m.cpuModel} (${fmtNum(m.cores)} cores)`],
        ["Memory", fmtGib(m.memoryBytes)],
        ["OS", m.os],
        ["Node", m.node],
        ["Open-file limit", fmtNum(m.fdLimit)],
        ...diskRow(run),
        ...cpuRow(run),
        ["ejabberd", m.ejabberdVersion ?? "not available"],
        ["PostgreSQL", m.postgresVersion ?? "not available"],
      ],
    ),
    "",
    "Every system ran in the same run on this same machine, one after another" +
      (run.idleOverlapped ? " (idle runs overlap, see Idle connections)" : "") +
      ", with the load generator sharing its cores; compare the systems with each other " +
      "rather than reading the absolute numbers as capacity on dedicated hardware.",
    "",
  ];
}

function renderSettings(run: BenchRun): string[] {
  const entries = Object.entries(run.settings);
  const out = ["## Settings", ""];
  if (entries.length === 0) {
    out.push("No bench-only settings: every server ran with its production defaults.", "");
    return out;
  }
  out.push(
    "Bench-only server settings that differ from production defaults:",
    "",
    table(
      ["Setting", "Value and why"],
      entries.map(([k, v]) => [code(k), v]),
    ),
    "",
  );
  return out;
}

/** Extra, optional inputs to renderMarkdown. */
export interface RenderOptions {
  /** Path of the saved results JSON, relative to the markdown file, to link to. */
  resultsFile?: string;
  /** Headline numbers of earlier full runs on this machine, this one included, oldest first. */
  runs?: readonly RunDigest[];
}

/**
 * Renders docs/BENCHMARKS.md for one run. Pure: `chartFiles` maps a ChartKey to the chart's
 * path relative to the markdown file; a chart not in the map is not referenced.
 */
export function renderMarkdown(
  run: BenchRun,
  profile: ProfileFix[],
  chartFiles: Record<string, string>,
  options: RenderOptions = {},
): string {
  const out: string[] = [
    "# Benchmarks",
    "",
    "<!-- Generated by bench/report.ts; edits are overwritten. -->",
    "",
    "> **Generated file.** `npm run bench` runs the full benchmark and rewrites this page " +
      "(`npm run bench -- --quick` for the smoke run); " +
      "`npm run bench:report -- docs/bench/results-full.json` regenerates it from saved " +
      "results.",
    "",
    table(
      ["Run", ""],
      [
        ["Date", fmtDate(run.startedAt)],
        ["Duration", fmtDuration(run.durationMs)],
        ["Mode", run.mode === "quick" ? "quick (smoke run, reduced scale)" : "full"],
        ["Git commit", code(run.gitCommit)],
        ...(options.resultsFile === undefined
          ? []
          : [["Raw results", `[${options.resultsFile}](${options.resultsFile})`]]),
      ],
    ),
    "",
  ];
  if (run.mode === "quick") {
    out.push(
      "This is a quick run: scales and durations are reduced, so the targets below are " +
        "not expected to be met.",
      "",
    );
  }
  out.push(...renderMachine(run), ...renderSettings(run));
  out.push("## Summary", "", renderSummary(run), "", "### Targets", "", renderTargets(run), "");
  const bounds = renderBounds(run);
  out.push(...bounds);
  out.push(
    ...renderOneToOne(run, chartFiles),
    ...renderGroup(run, chartFiles),
    ...renderIdle(run, chartFiles),
    ...renderReconnect(run),
    ...renderHistory(run),
    ...renderRuns(options.runs ?? []),
    ...renderProfile(profile),
    // The study explains the bounds section; without ours' 1:1 costs there is none.
    ...(bounds.length > 0 ? renderCeilingStudy() : []),
    ...renderSkipped(run),
    ...renderTimings(run),
  );
  out.push(
    "## How to read and reproduce",
    "",
    "- Rates are per second over a step; latencies are in milliseconds, measured from the " +
      "intended send time. p99.9 needs ≥ 1,000 samples per step to mean much.",
    "- A ✗ in *Within SLO* marks the step where the system saturated; steps past it show " +
      "queueing, not steady state.",
    ...(run.rampStep?.earlyEnd
      ? [
          "- A ramp step's CPU is read over its sending alone. Full runs before b3c0a33 " +
            "averaged it over the sending and the step's 1 s wait, which reads the same load " +
            "about a quarter lower (3 s of about 4). CPU figures that the text above and the " +
            "profiling notes quote from ramp steps of those runs compare like with like within " +
            "each note, and are low by that much beside this run's tables.",
        ]
      : []),
    "- Reproduce with `npm run bench` (full) or `npm run bench -- --quick` (smoke). A full " +
      "run's results land in `docs/bench/results-full.json` (`--out=<dir>` moves them and this " +
      "page); a full run at the standard sizes, with every scenario and system, also adds its " +
      "headline numbers to `docs/bench/runs-full.json`. `npm run bench:report -- " +
      "<results.json>` re-renders the page from them, reading `bench/profile-fixes.json` and " +
      "the runs file next to the results when they exist.",
    "- Run on an otherwise idle machine; the load generator shares the cores with the " +
      "servers, so background load skews every system.",
    "",
  );
  return out.join("\n");
}

// ---------------------------------------------------------------------------
// SVG charts

export interface ChartPoint {
  x: number;
  y: number;
}

export interface ChartSeries {
  name: string;
  points: ChartPoint[];
  /** Defaults to TARGET_COLORS[name] for target names, else a fallback palette. */
  color?: string;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  /** A dashed horizontal reference line, e.g. the 50 ms SLO (in y units). */
  threshold?: { y: number; label: string };
  /** Log-scale y axis; latency explodes past saturation, so log keeps both ends legible. */
  logY?: boolean;
  width?: number;
  height?: number;
  formatX?: (v: number) => string;
  formatY?: (v: number) => string;
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  bars: { label: string; value: number; color?: string }[];
  threshold?: { value: number; label: string };
  width?: number;
  height?: number;
  formatValue?: (v: number) => string;
}

const FALLBACK_COLORS = ["#0891b2", "#ca8a04", "#db2777", "#4b5563"];
const FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
const THRESHOLD_COLOR = "#dc2626";

function esc(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** Coordinates rounded to 0.1 px keep the files small and byte-stable across runs. */
function px(n: number): string {
  return String(Math.round(n * 10) / 10);
}

function colorFor(name: string, index: number, explicit?: string): string {
  if (explicit !== undefined) return explicit;
  if ((TARGETS as readonly string[]).includes(name)) return TARGET_COLORS[name as TargetName];
  return FALLBACK_COLORS[index % FALLBACK_COLORS.length] ?? "#4b5563";
}

/** A 1/2/5 × 10^k step giving about `count` ticks over [0, max]. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
  return nice * mag;
}

function linearTicks(max: number, count = 5): { max: number; ticks: number[] } {
  const top = max > 0 && Number.isFinite(max) ? max : 1;
  const step = niceStep(top, count);
  const niceMax = Math.ceil(top / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; i * step <= niceMax + step * 1e-9; i++) ticks.push(i * step);
  return { max: niceMax, ticks };
}

function logTicks(lo: number, hi: number): { lo: number; hi: number; ticks: number[] } {
  const e0 = Math.floor(Math.log10(lo));
  const e1 = Math.max(Math.ceil(Math.log10(hi)), e0 + 1);
  const multipliers = e1 - e0 <= 3 ? [1, 2, 5] : [1];
  const ticks: number[] = [];
  for (let e = e0; e <= e1; e++) {
    for (const m of multipliers) {
      const v = m * 10 ** e;
      if (v <= 10 ** e1 * 1.0000001) ticks.push(Number(v.toPrecision(6)));
    }
  }
  return { lo: 10 ** e0, hi: 10 ** e1, ticks };
}

/** Compact axis labels: 1,500 → "1.5k", 2,000,000 → "2M"; small values keep decimals. */
export function fmtAxis(v: number): string {
  const abs = Math.abs(v);
  const trim = (s: string) => s.replace(/\.0+$/, "").replace(/(\.\d*?)0+$/, "$1");
  if (abs >= 1e6) return `${trim((v / 1e6).toFixed(1))}M`;
  if (abs >= 1000) return `${trim((v / 1e3).toFixed(1))}k`;
  if (abs >= 1 || abs === 0) return trim(v.toFixed(1));
  return trim(v.toPrecision(2));
}

interface Frame {
  width: number;
  height: number;
  left: number;
  top: number;
  plotW: number;
  plotH: number;
}

function frame(width: number, height: number, legendW: number): Frame {
  const left = 76;
  const top = 44;
  return { width, height, left, top, plotW: width - left - legendW, plotH: height - top - 56 };
}

function svgOpen(f: Frame, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" ` +
      `viewBox="0 0 ${f.width} ${f.height}" font-family="${esc(FONT)}" font-size="12" ` +
      `role="img" aria-label="${esc(title)}">`,
    `<title>${esc(title)}</title>`,
    `<rect width="${f.width}" height="${f.height}" fill="#ffffff"/>`,
    `<text x="${px(f.width / 2)}" y="24" text-anchor="middle" font-size="15" ` +
      `font-weight="600" fill="#111827">${esc(title)}</text>`,
  ];
}

function noData(f: Frame): string {
  return (
    `<text x="${px(f.left + f.plotW / 2)}" y="${px(f.top + f.plotH / 2)}" ` +
    `text-anchor="middle" fill="#6b7280">no data</text>`
  );
}

function yAxisLabel(f: Frame, label: string): string {
  const cy = f.top + f.plotH / 2;
  return (
    `<text x="18" y="${px(cy)}" text-anchor="middle" fill="#374151" ` +
    `transform="rotate(-90 18 ${px(cy)})">${esc(label)}</text>`
  );
}

/**
 * A self-contained SVG line chart (~720×360): one polyline with markers per series, axes
 * with tick labels, a legend and an optional dashed threshold line. Pure.
 */
export function lineChartSvg(opts: LineChartOptions): string {
  const f = frame(opts.width ?? 720, opts.height ?? 360, 170);
  const fx = opts.formatX ?? fmtAxis;
  const fy = opts.formatY ?? fmtAxis;
  const logY = opts.logY ?? false;
  const all = opts.series.flatMap((s) => s.points);
  const out = svgOpen(f, opts.title);

  const xs = linearTicks(Math.max(0, ...all.map((p) => p.x)));
  const ys = all.map((p) => p.y);
  if (opts.threshold) ys.push(opts.threshold.y);
  const positive = ys.filter((y) => y > 0);
  let yOf: (y: number) => number;
  let yTicks: number[];
  if (logY) {
    const lo = positive.length > 0 ? Math.min(...positive) : 1;
    const hi = positive.length > 0 ? Math.max(...positive) : 10;
    const t = logTicks(lo, hi);
    const [l0, l1] = [Math.log10(t.lo), Math.log10(t.hi)];
    // Non-positive values cannot sit on a log axis, so they are pinned to its floor.
    yOf = (y) => {
      const v = Math.log10(Math.max(y, t.lo));
      return f.top + f.plotH - ((v - l0) / (l1 - l0)) * f.plotH;
    };
    yTicks = t.ticks;
  } else {
    const t = linearTicks(Math.max(0, ...ys));
    yOf = (y) => f.top + f.plotH - (Math.max(y, 0) / t.max) * f.plotH;
    yTicks = t.ticks;
  }
  const xOf = (x: number) => f.left + (x / xs.max) * f.plotW;
  const bottom = f.top + f.plotH;
  const right = f.left + f.plotW;

  // Grid and tick labels first so the data draws on top.
  for (const t of yTicks) {
    const y = px(yOf(t));
    out.push(
      `<line x1="${f.left}" y1="${y}" x2="${px(right)}" y2="${y}" stroke="#e5e7eb"/>`,
      `<text x="${f.left - 6}" y="${y}" dy="4" text-anchor="end" fill="#374151">` +
        `${esc(fy(t))}</text>`,
    );
  }
  for (const t of xs.ticks) {
    const x = px(xOf(t));
    out.push(
      `<line x1="${x}" y1="${px(bottom)}" x2="${x}" y2="${px(bottom + 4)}" stroke="#6b7280"/>`,
      `<text x="${x}" y="${px(bottom + 18)}" text-anchor="middle" fill="#374151">` +
        `${esc(fx(t))}</text>`,
    );
  }
  out.push(
    `<line x1="${f.left}" y1="${px(bottom)}" x2="${px(right)}" y2="${px(bottom)}" ` +
      `stroke="#6b7280"/>`,
    `<line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${px(bottom)}" stroke="#6b7280"/>`,
    `<text x="${px(f.left + f.plotW / 2)}" y="${px(f.height - 12)}" text-anchor="middle" ` +
      `fill="#374151">${esc(opts.xLabel)}</text>`,
    yAxisLabel(f, opts.yLabel + (logY ? " (log scale)" : "")),
  );

  if (opts.threshold) {
    const y = px(yOf(opts.threshold.y));
    out.push(
      `<line class="threshold" x1="${f.left}" y1="${y}" x2="${px(right)}" y2="${y}" ` +
        `stroke="${THRESHOLD_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>`,
      `<text x="${px(right - 4)}" y="${y}" dy="-5" text-anchor="end" ` +
        `fill="${THRESHOLD_COLOR}">${esc(opts.threshold.label)}</text>`,
    );
  }

  if (all.length === 0) out.push(noData(f));
  opts.series.forEach((s, i) => {
    const color = colorFor(s.name, i, s.color);
    // Step order, not x order: achieved rates can fall back past saturation.
    const pts = s.points;
    const coords = pts.map((p) => `${px(xOf(p.x))},${px(yOf(p.y))}`).join(" ");
    out.push(
      `<g class="series" data-series="${esc(s.name)}">`,
      `<polyline points="${coords}" fill="none" stroke="${color}" stroke-width="2" ` +
        `stroke-linejoin="round"/>`,
      ...pts.map(
        (p) =>
          `<circle cx="${px(xOf(p.x))}" cy="${px(yOf(p.y))}" r="3" fill="${color}">` +
          `<title>${esc(`${s.name}: ${fx(p.x)} → ${fy(p.y)}`)}</title></circle>`,
      ),
      "</g>",
    );
  });

  // Legend to the right of the plot so it never covers data.
  const lx = right + 16;
  let ly = f.top + 8;
  opts.series.forEach((s, i) => {
    const color = colorFor(s.name, i, s.color);
    out.push(
      `<line x1="${px(lx)}" y1="${ly}" x2="${px(lx + 22)}" y2="${ly}" stroke="${color}" ` +
        `stroke-width="2"/>`,
      `<circle cx="${px(lx + 11)}" cy="${ly}" r="3" fill="${color}"/>`,
      `<text x="${px(lx + 30)}" y="${ly}" dy="4" fill="#111827">${esc(s.name)}</text>`,
    );
    ly += 20;
  });
  if (opts.threshold) {
    out.push(
      `<line x1="${px(lx)}" y1="${ly}" x2="${px(lx + 22)}" y2="${ly}" ` +
        `stroke="${THRESHOLD_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>`,
      `<text x="${px(lx + 30)}" y="${ly}" dy="4" fill="#111827">` +
        `${esc(opts.threshold.label)}</text>`,
    );
  }
  out.push("</svg>", "");
  return out.join("\n");
}

/**
 * A self-contained SVG bar chart (~720×360): one labelled bar per entry, value labels on
 * the bars and an optional dashed threshold line. Pure.
 */
export function barChartSvg(opts: BarChartOptions): string {
  const f = frame(opts.width ?? 720, opts.height ?? 360, 24);
  const fv = opts.formatValue ?? fmtAxis;
  const out = svgOpen(f, opts.title);
  const values = opts.bars.map((b) => b.value);
  if (opts.threshold) values.push(opts.threshold.value);
  // 10% headroom keeps value labels and the threshold label off the top edge.
  const t = linearTicks(Math.max(0, ...values) * 1.1);
  const yOf = (v: number) => f.top + f.plotH - (Math.max(v, 0) / t.max) * f.plotH;
  const bottom = f.top + f.plotH;
  const right = f.left + f.plotW;

  for (const tick of t.ticks) {
    const y = px(yOf(tick));
    out.push(
      `<line x1="${f.left}" y1="${y}" x2="${px(right)}" y2="${y}" stroke="#e5e7eb"/>`,
      `<text x="${f.left - 6}" y="${y}" dy="4" text-anchor="end" fill="#374151">` +
        `${esc(fmtAxis(tick))}</text>`,
    );
  }
  out.push(
    `<line x1="${f.left}" y1="${px(bottom)}" x2="${px(right)}" y2="${px(bottom)}" ` +
      `stroke="#6b7280"/>`,
    `<line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${px(bottom)}" stroke="#6b7280"/>`,
    yAxisLabel(f, opts.yLabel),
  );
  if (opts.bars.length === 0) out.push(noData(f));

  const slot = f.plotW / Math.max(opts.bars.length, 1);
  const barW = Math.min(slot * 0.6, 120);
  opts.bars.forEach((b, i) => {
    const color = colorFor(b.label, i, b.color);
    const cx = f.left + slot * (i + 0.5);
    const y = yOf(b.value);
    out.push(
      `<rect class="bar" x="${px(cx - barW / 2)}" y="${px(y)}" width="${px(barW)}" ` +
        `height="${px(bottom - y)}" fill="${color}"><title>${esc(`${b.label}: ${fv(b.value)}`)}` +
        "</title></rect>",
      `<text x="${px(cx)}" y="${px(y - 6)}" text-anchor="middle" fill="#111827">` +
        `${esc(fv(b.value))}</text>`,
      `<text x="${px(cx)}" y="${px(bottom + 18)}" text-anchor="middle" fill="#374151">` +
        `${esc(b.label)}</text>`,
    );
  });

  if (opts.threshold) {
    const y = px(yOf(opts.threshold.value));
    out.push(
      `<line class="threshold" x1="${f.left}" y1="${y}" x2="${px(right)}" y2="${y}" ` +
        `stroke="${THRESHOLD_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>`,
      `<text x="${px(right - 4)}" y="${y}" dy="-5" text-anchor="end" ` +
        `fill="${THRESHOLD_COLOR}">${esc(opts.threshold.label)}</text>`,
    );
  }
  out.push("</svg>", "");
  return out.join("\n");
}

// ---------------------------------------------------------------------------
// Charts for a run, and the writer

function rampSeries(results: readonly RampResult[], x: (s: RateStep) => number): ChartSeries[] {
  return TARGETS.flatMap((t) => {
    const r = byTarget(results, t);
    if (!r || r.steps.length === 0) return [];
    return [{ name: t, points: r.steps.map((s) => ({ x: x(s), y: s.deliver.p99 / 1000 })) }];
  });
}

/** The SVG charts a run has data for, keyed by ChartKey. Pure. */
export function renderCharts(run: BenchRun): Partial<Record<ChartKey, string>> {
  const charts: Partial<Record<ChartKey, string>> = {};
  const slo = { y: SLO_P99_US / 1000, label: `SLO ${fmtNum(SLO_P99_US / 1000)} ms` };
  const one = rampSeries(run.oneToOne, (s) => s.offeredPerSec);
  if (one.length > 0) {
    charts.oneToOne = lineChartSvg({
      title: "1:1 chat: p99 send→deliver by offered rate",
      xLabel: "offered msgs/s",
      yLabel: "p99 send→deliver, ms",
      series: one,
      threshold: slo,
      logY: true,
    });
  }
  const groupSloMs = (run.groupFanout.sloP99Us ?? SLO_P99_US) / 1000;
  const groupSlo = { y: groupSloMs, label: `SLO ${fmtNum(groupSloMs)} ms` };
  const group = rampSeries(run.groupFanout.results, (s) => s.deliveriesPerSec);
  if (group.length > 0) {
    charts.groupFanout = lineChartSvg({
      title: `Group fan-out (${fmtNum(run.groupFanout.groupSize)} members): p99 by deliveries/s`,
      xLabel: "deliveries/s",
      yLabel: "p99 send→deliver, ms",
      series: group,
      threshold: groupSlo,
      logY: true,
    });
  }
  const idle: { label: string; value: number }[] = TARGETS.flatMap((t) => {
    const r = byTarget(socketIdle(run), t);
    return r ? [{ label: t, value: r.rssPerConnBytes / 1024 }] : [];
  });
  const streams = streamIdle(run);
  if (streams) idle.push({ label: "ours (gRPC streams)", value: streams.rssPerConnBytes / 1024 });
  const subscribes = subscribeIdle(run);
  if (subscribes) {
    idle.push({ label: "ours (gRPC Subscribe)", value: subscribes.rssPerConnBytes / 1024 });
  }
  const connectSubscribes = run.idle.find((r) => r.target === "ours" && isConnectSubscribes(r));
  if (connectSubscribes) {
    idle.push({
      label: "ours (Connect Subscribe)",
      value: connectSubscribes.rssPerConnBytes / 1024,
    });
  }
  if (idle.length > 0) {
    charts.idle = barChartSvg({
      title: "Idle sessions: RSS per session",
      yLabel: "KB per session",
      bars: idle,
      threshold: { value: IDLE_TARGET_BYTES_PER_CONN / 1024, label: "target 10 KB" },
      formatValue: (v) => `${fmtNum(v, 1)} KB`,
    });
  }
  return charts;
}

/** Writes docs/BENCHMARKS.md and its SVG charts under docs/bench/ from one run. */
export async function writeReport(
  run: BenchRun,
  opts: {
    docsDir: string;
    profile: ProfileFix[];
    resultsFile: string;
    runs?: readonly RunDigest[];
  },
): Promise<{ markdownPath: string; charts: string[] }> {
  const chartDir = path.join(opts.docsDir, "bench");
  await mkdir(chartDir, { recursive: true });
  const svgs = renderCharts(run);
  const chartFiles: Record<string, string> = {};
  const charts: string[] = [];
  for (const key of Object.keys(CHART_NAMES) as ChartKey[]) {
    const file = path.join(chartDir, CHART_NAMES[key]);
    const svg = svgs[key];
    if (svg === undefined) {
      // A chart from an earlier run would otherwise sit next to a report that lacks its data.
      await rm(file, { force: true });
      continue;
    }
    await writeFile(file, svg);
    charts.push(file);
    chartFiles[key] = `bench/${CHART_NAMES[key]}`;
  }
  const markdownPath = path.join(opts.docsDir, "BENCHMARKS.md");
  // Markdown links use forward slashes whatever the platform.
  const resultsFile = path.relative(opts.docsDir, opts.resultsFile).split(path.sep).join("/");
  await writeFile(
    markdownPath,
    renderMarkdown(run, opts.profile, chartFiles, {
      resultsFile,
      ...(opts.runs ? { runs: opts.runs } : {}),
    }),
  );
  return { markdownPath, charts };
}
