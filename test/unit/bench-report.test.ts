import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  type BenchRun,
  digestOf,
  type IdleResult,
  type LatencySummary,
  medianEach,
  type ProfileFix,
  type RampResult,
  type RateStep,
  readRunDigests,
  type TargetName,
  withDigest,
} from "../../bench/lib/results.js";
import {
  barChartSvg,
  fmtMs,
  fmtNum,
  lineChartSvg,
  renderMarkdown,
  writeReport,
} from "../../bench/report.js";
import { CEILING_STUDY_TITLE } from "../../bench/report-findings.js";

const lat = (p99Us: number): LatencySummary => ({
  count: 1000,
  p50: p99Us / 4,
  p90: p99Us / 2,
  p99: p99Us,
  p999: p99Us * 2,
  max: p99Us * 3,
  mean: p99Us / 3,
});

const ramp = (target: TargetName, sustained: number, deliveriesPerMsg = 1): RampResult => ({
  target,
  sustainedPerSec: sustained,
  sustainedDeliveriesPerSec: sustained * deliveriesPerMsg,
  steps: [
    {
      offeredPerSec: sustained,
      achievedPerSec: sustained,
      deliveriesPerSec: sustained * deliveriesPerMsg,
      ack: lat(12_345),
      deliver: lat(20_000),
      missing: 0,
      withinSlo: true,
    },
    {
      offeredPerSec: sustained * 2,
      achievedPerSec: sustained * 1.5,
      deliveriesPerSec: sustained * 1.5 * deliveriesPerMsg,
      deliver: lat(900_000),
      missing: 17,
      withinSlo: false,
    },
  ],
});

/** ours 6,000 vs routing 3,000 vs archive 2,500 msgs/s; relay skipped. */
const fakeRun = (): BenchRun => ({
  startedAt: "2025-03-04T05:06:07.000Z",
  durationMs: 754_000,
  mode: "full",
  gitCommit: "abc1234",
  machine: {
    cpuModel: "Fake CPU 9000",
    cores: 8,
    memoryBytes: 16 * 1024 ** 3,
    os: "Linux 6.1",
    node: "v20.19.0",
    fdLimit: 1_048_576,
    ejabberdVersion: "24.12",
  },
  settings: { CHAT_RATE_LIMIT: "off: the generator would trip the per-user budget" },
  oneToOne: [ramp("ours", 6000), ramp("ejabberd-routing", 3000), ramp("ejabberd-archive", 2500)],
  groupFanout: {
    groupSize: 11,
    groups: 50,
    sloP99Us: 250_000,
    results: [ramp("ours", 2000, 10), ramp("ejabberd-routing", 1200, 10)],
  },
  idle: [
    {
      target: "ours",
      attempted: 100_000,
      held: 100_000,
      rssBaseBytes: 50 * 1024 * 1024,
      rssHeldBytes: 50 * 1024 * 1024 + 100_000 * 8 * 1024,
      rssPerConnBytes: 8 * 1024,
      heartbeatIntervalMs: 25_000,
      holdMs: 60_000,
      connectPerSec: 5000,
    },
  ],
  reconnect: [
    {
      target: "ours",
      clients: 10_000,
      missedPerClient: 20,
      catchUpMs: 4200,
      caughtUp: 10_000,
      lost: 0,
      duplicated: 0,
      perClient: lat(1_500_000),
    },
  ],
  history: [
    {
      target: "ours",
      paging: {
        pageSize: 50,
        pagesPerSec: 800,
        eventsPerSec: 40_000,
        latency: lat(5000),
        targetCpuPct: 80,
        loadGenCpuPct: 70,
      },
      resume: {
        conversationsPerClient: 20,
        eventsPerResume: 200,
        resumesPerSec: 100,
        eventsPerSec: 20_000,
        latency: lat(30_000),
      },
    },
  ],
  skipped: [{ scenario: "one-to-one", target: "relay", reason: "relay binary not built" }],
});

/** The cells of the first table row whose first cell starts with `label`. */
function row(md: string, label: string): string[] {
  const line = md.split("\n").find((l) => l.startsWith(`| ${label}`));
  expect(line, `row "${label}"`).toBeDefined();
  return line!
    .slice(2, -2)
    .split(" | ")
    .map((c) => c.trim());
}

const status = (md: string, goal: string) => row(md, goal).at(-1);

describe("renderMarkdown", () => {
  it("computes ours/other ratios and shows — for a target without results", () => {
    const md = renderMarkdown(fakeRun(), [], {});
    // Scenario | ours | relay | ejabberd-routing | ejabberd-archive | 3 ratios.
    const cells = row(md, "1:1 sustained msgs/s");
    expect(cells.slice(1)).toEqual(["6,000", "—", "3,000", "2,500", "2.00×", "2.40×", "—"]);
    const group = row(md, "Group fan-out sustained deliveries/s");
    expect(group.slice(1)).toEqual(["20,000", "—", "12,000", "—", "1.67×", "—", "—"]);
    expect(md).toContain("- `relay` (1:1 chat): relay binary not built");
  });

  it("reports what holding idle sessions costs the server, per heartbeat", () => {
    const run = fakeRun();
    const base = { ...run.idle[0]!, target: "ours" as const, connections: 200 };
    const session = { ...base, held: 20_000, holdCpuPct: 8, transport: "grpc-streams" as const };
    const subscribe = {
      ...base,
      held: 20_000,
      holdCpuPct: 40,
      transport: "grpc-subscribe-streams" as const,
    };
    run.idle.push(session);
    // Without a Subscribe run there is nothing to compare.
    expect(renderMarkdown(run, [], {})).not.toContain("Keeping sessions alive costs CPU");
    run.idle.push(subscribe);
    const md = renderMarkdown(run, [], {});
    // 20,000 sessions heartbeat 800 times a second: 8% of a core is 100 µs a heartbeat, 40% is 500.
    expect(md).toContain(
      "20,000 gRPC Session streams heartbeating on their streams, 8% of a core (about 100 µs per heartbeat)",
    );
    expect(md).toContain(
      "20,000 gRPC Subscribe calls heartbeating with gRPC unary calls, 40% of a core (about 500 µs",
    );
    expect(md).toContain("| Server CPU % while held |");
    // A hold shorter than one heartbeat interval (the quick run) says nothing per heartbeat.
    for (const r of [session, subscribe]) r.holdMs = 1000;
    expect(renderMarkdown(run, [], {})).not.toContain("Keeping sessions alive costs CPU");
  });

  it("states how long each ramp step runs and what its CPU covers when the results record it", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("Each step sends for");
    run.rampStep = { sendMs: 3000, graceMs: 1000 };
    const older = renderMarkdown(run, [], {});
    expect(older).toContain(
      "Each step sends for 3.00 s, then waits for late acks and deliveries for 1.00 s.",
    );
    expect(older).toContain("CPU is in % of one core over the step, its sending and its wait");
    run.rampStep = { sendMs: 3000, graceMs: 1000, earlyEnd: true };
    const now = renderMarkdown(run, [], {});
    expect(now).toContain(
      "Each step sends for 3.00 s, then waits for late acks and deliveries until every message is in, at most 1.00 s.",
    );
    expect(now).toContain("CPU is in % of one core while the step sends");
    // Results without a recorded warm-up warmed up too briefly, and say so.
    expect(now).toContain(
      "Before the first step an unrecorded warm-up sent for 2 s at half the first rate; too " +
        "short, it left the first steps' CPU about half again as high",
    );
    run.rampStep = { ...run.rampStep, warmUp: { ms: 3000, at: "second" } };
    const warmed = renderMarkdown(run, [], {});
    expect(warmed).toContain(
      "Before the first step an unrecorded warm-up sends for 3.00 s at the second rate (the " +
        "JIT, buffers and caches, as on a server that has run a while).",
    );
    expect(warmed).not.toContain("too short");
  });

  it("shows ours' 1:1 over gRPC beside its WebSocket ramp, ours only, without touching the ratios", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("### Ours over gRPC");
    const grpc = ramp("ours", 4000);
    grpc.steps[0]!.targetCpuPct = 60;
    run.oneToOne[0]!.steps[0]!.targetCpuPct = 72;
    run.oneToOneGrpc = [grpc];
    const md = renderMarkdown(run, [], {});
    // 72% of a core at 6,000 msgs/s is 120 µs a message; 60% at 4,000 is 150.
    expect(md).toContain(
      "Over WebSocket the same server sustained 6,000 msgs/s at 120 µs of server CPU per message; over gRPC 4,000 msgs/s at 150 µs.",
    );
    expect(md).toContain("#### `ours` over gRPC Session streams");
    expect(md).toContain(
      "| 1:1 sustained msgs/s, ours over gRPC Session streams (one HTTP/2 connection each) | 4,000 | — | — | — | — | — | — |",
    );
    expect(md).toContain(
      "- `relay` (1:1 over gRPC): ours only: gRPC is our native clients' transport",
    );
    // The targets still compare the WebSocket ramp: 6,000 against routing's 3,000.
    expect(md).toContain("ours 6,000 vs ejabberd-routing 3,000 msgs/s (2.00×)");
  });

  it("shows ours' 1:1 from Connect clients after the gRPC ramp, with the load generator's share", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("Connect clients");
    const connect = ramp("ours", 2000);
    connect.steps[0]!.targetCpuPct = 60;
    connect.steps[0]!.loadGenCpuPct = 40;
    run.oneToOne[0]!.steps[0]!.targetCpuPct = 72;
    run.oneToOneGrpc = [ramp("ours", 4000)];
    run.oneToOneConnect = [connect];
    const md = renderMarkdown(run, [], {});
    // 60% of a core at 2,000 msgs/s is 300 µs a message; the generator's 40% is 200.
    expect(md).toContain(
      "Over WebSocket the same server sustained 6,000 msgs/s at 120 µs of server CPU per message; from Connect clients 2,000 msgs/s at 300 µs (the load generator 200).",
    );
    expect(md.indexOf("### Ours from web apps' Connect clients")).toBeGreaterThan(
      md.indexOf("### Ours over gRPC"),
    );
    expect(md).toContain("#### `ours` from Connect clients");
    expect(md).toContain(
      "| 1:1 sustained msgs/s, ours from web apps' Connect clients (Subscribe + a unary Send per message, one HTTP/2 connection each) | 2,000 | — |",
    );
    expect(md).toContain("- `relay` (1:1 over Connect): ours only: Connect's protocol");
  });

  it("shows ours' 1:1 split over a core and two edges as a row of its own and a section after the transports", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("split");
    const split = ramp("ours", 3000);
    split.steps[0]!.targetCpuPct = 90;
    run.oneToOne[0]!.steps[0]!.targetCpuPct = 72;
    run.oneToOneConnect = [ramp("ours", 2000)];
    run.oneToOneSplit = [split];
    const md = renderMarkdown(run, [], {});
    // 90% of a core at 3,000 msgs/s is 300 µs a message, every process counted.
    expect(md).toContain(
      "split over a core and two edges, whose CPU is every process's, Redis' included, 3,000 msgs/s at 300 µs.",
    );
    expect(md.indexOf("### Ours split: a core and two edges")).toBeGreaterThan(
      md.indexOf("### Ours from web apps' Connect clients"),
    );
    expect(md).toContain(
      "| 1:1 sustained msgs/s, ours split: a core and two edge processes, soft state in Redis (WebSocket; the two members of each pair on different edges) | 3,000 | — |",
    );
    expect(md).toContain("- `relay` (1:1 split): ours only: a split deployment");
  });

  it("shows ours' 1:1 with the store in Cassandra as a row of its own and a section after the split", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("Cassandra");
    const onCassandra = ramp("ours", 500);
    onCassandra.steps[0]!.targetCpuPct = 150;
    run.oneToOneSplit = [ramp("ours", 3000)];
    run.oneToOneCassandra = [onCassandra];
    const md = renderMarkdown(run, [], {});
    // 150% of a core at 500 msgs/s is 3 ms a message, Cassandra's CPU counted.
    expect(md).toContain(
      "with its store in Cassandra, whose CPU is the server's and Cassandra's together, 500 msgs/s at 3,000 µs.",
    );
    expect(md.indexOf("### Ours with its store in Cassandra")).toBeGreaterThan(
      md.indexOf("### Ours split: a core and two edges"),
    );
    expect(md).toContain("| 1:1 sustained msgs/s, ours with its store in Cassandra (");
    expect(md).toContain("- `relay` (1:1 on Cassandra): ours only: the store in Cassandra");
  });

  it("shows ours' 1:1 with the log in Pulsar as a row of its own and a section after Cassandra", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("log in Pulsar");
    const onPulsar = ramp("ours", 2000);
    onPulsar.steps[0]!.targetCpuPct = 120;
    run.oneToOneCassandra = [ramp("ours", 500)];
    run.oneToOnePulsar = [onPulsar];
    const md = renderMarkdown(run, [], {});
    // 120% of a core at 2,000 msgs/s is 600 µs a message, the broker's CPU counted.
    expect(md).toContain(
      "with its log in Pulsar, whose CPU is the server's and the broker's together, 2,000 msgs/s at 600 µs.",
    );
    expect(md.indexOf("### Ours with its log in Pulsar")).toBeGreaterThan(
      md.indexOf("### Ours with its store in Cassandra"),
    );
    expect(md).toContain("| 1:1 sustained msgs/s, ours with its log in Pulsar (");
    expect(md).toContain("- `relay` (1:1 on Pulsar): ours only: the log in Pulsar");
  });

  it("shows where the run's time went, per scenario and system, and the rest", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("## Where the run's time went");
    run.durationMs = 100_000;
    run.timings = [
      { scenario: "one-to-one", target: "ours", ms: 40_000 },
      { scenario: "one-to-one", target: "relay", ms: 20_000 },
      { scenario: "idle", target: "ours", ms: 15_000 },
      { scenario: "idle", target: "ours", variant: "gRPC Session streams", ms: 20_000 },
    ];
    const md = renderMarkdown(run, [], {});
    expect(md).toContain("(1:1 chat 1 min 0 s, idle connections 35.0 s)");
    expect(md).toContain("| idle connections | `ours` (gRPC Session streams) | 20.0 s |");
    expect(md).toContain(
      "|  | starting the load generator, writing the results and this page | 5.00 s |",
    );
    expect(md).toContain("| **Total** |  | **1 min 40 s** |");
    expect(md).not.toContain("Idle runs overlap");
    run.idleOverlapped = true;
    expect(renderMarkdown(run, [], {})).toContain(
      "Idle runs overlap (each opens while the one before holds), so an idle row lasts until " +
        "the next began.",
    );
  });

  it("says whether idle runs overlapped, and lists ours' forms sockets first", () => {
    const run = fakeRun();
    const sockets = run.idle[0]!;
    const streams: IdleResult = {
      ...sockets,
      transport: "grpc-streams",
      connections: 1000,
      rssPerConnBytes: 9 * 1024,
    };
    // Stream forms ran first; the table still opens with one socket per session.
    run.idle = [streams, sockets];
    let md = renderMarkdown(run, [], {});
    const first = md.indexOf("| `ours` | one socket each |");
    const second = md.indexOf("| `ours` | gRPC Session streams, 1,000 HTTP/2 connections |");
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(first);
    expect(md).toContain("The runs followed one another, none overlapping.");
    expect(md).toContain("on this same machine, one after another, with the load generator");
    expect(md).not.toContain("second pair of load-generator processes");
    run.idleOverlapped = true;
    md = renderMarkdown(run, [], {});
    expect(md).toContain(
      "while the one before holds its own; each hold still ends on time, and RSS and CPU are " +
        "read per process, so neither counts the other's.",
    );
    expect(md).toContain("ejabberd runs alone, its opening and its hold with nothing beside them");
    expect(md).toContain(
      "one after another (idle runs overlap, see Idle connections), with the load generator",
    );
    expect(md).not.toContain("none overlapping");
  });

  it("names the fan-out groups in words that fit their count", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).toContain("50 groups of 11 members; every message");
    run.groupFanout.groups = 1;
    expect(renderMarkdown(run, [], {})).toContain("One group of 11 members; every message");
  });

  it("marks each target ✓ or ✗ from the numbers", () => {
    const md = renderMarkdown(fakeRun(), [], {});
    expect(status(md, "(1) 1:1 sustained ≥ ejabberd routing-only")).toBe("✓");
    // 6,000 < 3 × 2,500.
    expect(status(md, "(1) 1:1 sustained ≥ 3× ejabberd archive")).toBe("✗");
    expect(status(md, "(1) 1:1 sustained ≥ 50% of relay")).toBe("—");
    expect(row(md, "(1) 1:1 sustained ≥ 50% of relay")[1]).toContain("relay binary not built");
    expect(status(md, "(2) Idle: ≥ 100,000 sessions")).toBe("✓");
    expect(status(md, "(2) Idle: ≤ 10 KB RSS")).toBe("✓");
    // 20,000 < 2 × 12,000.
    expect(status(md, "(3) Group fan-out deliveries/s ≥ 2× ejabberd MUC (ejabberd-routing)")).toBe(
      "✗",
    );
    expect(status(md, "(4) Reconnect storm")).toBe("✓");
  });

  it("flips statuses when the numbers cross the targets", () => {
    const run = fakeRun();
    run.machine.fdLimit = 65_536;
    run.idle[0]!.held = 60_000;
    run.idle[0]!.rssPerConnBytes = 10.5 * 1024;
    run.reconnect[0]!.duplicated = 1;
    run.oneToOne = run.oneToOne.filter((r) => r.target !== "ejabberd-archive");
    run.oneToOne.push(ramp("ejabberd-archive", 2000), ramp("relay", 12_000));
    run.groupFanout.results = run.groupFanout.results.filter((r) => r.target === "ours");
    run.skipped = [
      { scenario: "group-fanout", target: "ejabberd-routing", reason: "no MUC module" },
    ];
    const md = renderMarkdown(run, [], {});
    expect(status(md, "(1) 1:1 sustained ≥ 3× ejabberd archive")).toBe("✓");
    expect(status(md, "(1) 1:1 sustained ≥ 50% of relay")).toBe("✓");
    expect(row(md, "1:1 sustained msgs/s").at(-1)).toBe("0.50×");
    expect(status(md, "(2) Idle: ≥ 100,000 sessions")).toBe("✗");
    expect(row(md, "(2) Idle: ≥ 100,000 sessions")[1]).toContain("fd limit of 65,536");
    expect(status(md, "(2) Idle: ≤ 10 KB RSS")).toBe("✗");
    expect(status(md, "(3) Group fan-out")).toBe("—");
    expect(row(md, "(3) Group fan-out")[1]).toContain("no MUC module");
    expect(status(md, "(4) Reconnect storm")).toBe("✗");
  });

  it("counts idle sessions carried as gRPC streams beside the fd-capped socket run", () => {
    const run = fakeRun();
    run.machine.fdLimit = 20_000;
    const sockets = run.idle[0]!;
    sockets.attempted = 19_000;
    sockets.held = 19_000;
    sockets.rssPerConnBytes = 7 * 1024;
    let md = renderMarkdown(run, [], {});
    expect(status(md, "(2) Idle: ≥ 100,000 sessions")).toBe("✗");
    expect(row(md, "(2) Idle: ≥ 100,000 sessions")[1]).toContain("fd limit of 20,000");

    const streams = {
      ...sockets,
      attempted: 100_000,
      held: 100_000,
      rssPerConnBytes: 9 * 1024,
      transport: "grpc-streams" as const,
      connections: 1000,
    };
    run.idle.push(streams);
    md = renderMarkdown(run, [], {});
    expect(status(md, "(2) Idle: ≥ 100,000 sessions")).toBe("✓");
    expect(row(md, "(2) Idle: ≥ 100,000 sessions")[1]).toContain(
      "100,000 of 100,000 gRPC stream sessions held on 1,000 HTTP/2 connections",
    );
    expect(status(md, "(2) Idle: ≤ 10 KB RSS")).toBe("✓");
    // The socket-per-session row compares targets; the stream run has rows of its own.
    expect(row(md, "Idle sessions held, one socket each")[1]).toBe("19,000");
    expect(row(md, "Idle sessions held as gRPC streams")[1]).toBe("100,000");
    expect(md).toContain("| `ours` | gRPC Session streams, 1,000 HTTP/2 connections | 100,000 |");
    // The stream rows are ours only, which their footnote says; an absent socket run is still "not run".
    expect(md).toContain("- `ejabberd-routing` (idle sessions as gRPC streams): ours only:");
    expect(md).toMatch(/- `relay` \([^)]*idle connections[^)]*\): not run/);

    streams.rssPerConnBytes = 12 * 1024;
    md = renderMarkdown(run, [], {});
    expect(status(md, "(2) Idle: ≤ 10 KB RSS")).toBe("✗");
    streams.held = 80_000;
    md = renderMarkdown(run, [], {});
    expect(status(md, "(2) Idle: ≥ 100,000 sessions")).toBe("✗");

    // Subscribe calls get a row and a table line of their own and never stand in for Session streams.
    run.idle.push({
      ...streams,
      held: 100_000,
      rssPerConnBytes: 6 * 1024,
      transport: "grpc-subscribe-streams" as const,
    });
    md = renderMarkdown(run, [], {});
    expect(row(md, "Idle RSS per gRPC Subscribe stream session")[1]).toBe("6.0");
    expect(row(md, "Idle RSS per gRPC stream session")[1]).toBe("12.0");
    expect(md).toContain("| `ours` | gRPC Subscribe streams, 1,000 HTTP/2 connections | 100,000 |");
    run.idle.push({
      ...streams,
      held: 20_000,
      rssPerConnBytes: 5 * 1024,
      transport: "connect-subscribe-streams" as const,
    });
    md = renderMarkdown(run, [], {});
    expect(row(md, "Idle RSS per Connect-protocol Subscribe stream session")[1]).toBe("5.0");
    expect(row(md, "Idle RSS per gRPC Subscribe stream session")[1]).toBe("6.0");
    expect(md).toContain(
      "| `ours` | Connect Subscribe streams, 1,000 HTTP/2 connections | 100,000 | 20,000 |",
    );
    expect(status(md, "(2) Idle: ≥ 100,000 sessions")).toBe("✗");
    expect(row(md, "Idle sessions held, one socket each")[1]).toBe("19,000");
  });

  it("says when a ramp ran out of steps within the SLO, so the ceiling and the ratio are bounds", () => {
    const run = fakeRun();
    const relay = ramp("relay", 48_000);
    run.oneToOne.push(relay);
    let md = renderMarkdown(run, [], {});
    expect(row(md, "(1) 1:1 sustained ≥ 50% of relay")[1]).not.toContain("ran out of steps");
    expect(md).not.toContain("The ramp ran out of steps");

    relay.steps.pop();
    md = renderMarkdown(run, [], {});
    expect(row(md, "(1) 1:1 sustained ≥ 50% of relay")[1]).toContain(
      "relay's ramp ran out of steps within the SLO, so its ceiling is at least that and the ratio at most",
    );
    expect(md).toContain(
      "Sustained: **48,000 msgs/s**. The ramp ran out of steps before this system went over the SLO",
    );
  });

  it("marks a step that stands on its second attempt, with the first attempt's p99", () => {
    const run = fakeRun();
    const ours = run.oneToOne[0]!;
    expect(renderMarkdown(run, [], {})).not.toContain("† Second attempt");
    ours.steps[0]!.retriedAfterP99 = 109_600;
    const md = renderMarkdown(run, [], {});
    expect(md).toContain(`| ${ours.steps[0]!.offeredPerSec.toLocaleString("en-US")} † |`);
    expect(md).toContain(
      `† Second attempt; the first went over the SLO: ${ours.steps[0]!.offeredPerSec.toLocaleString("en-US")}/s (first attempt p99 109.6 ms).`,
    );
  });

  it("explains what bounds 1:1 from CPU per message at ours' sustained rate", () => {
    const run = fakeRun();
    const withCpu = (r: RampResult, serverPct: number, genPct: number) => {
      r.steps[0]!.targetCpuPct = serverPct;
      r.steps[0]!.loadGenCpuPct = genPct;
    };
    withCpu(run.oneToOne[0]!, 120, 60);
    const relay = ramp("relay", 6000);
    withCpu(relay, 30, 40);
    run.oneToOne.push(relay);
    const md = renderMarkdown(run, [], {});
    expect(md).toContain("At 6,000 msgs/s, the highest rate ours sustained, on 8 cores:");
    // 120% of a core over 6,000 msgs/s is 200 µs per message; the relay's 30% is 50 µs.
    expect(md).toContain("the server used 120% of a core (200 µs of CPU per message)");
    expect(md).toContain("the server used 30% of a core (50 µs of CPU per message)");
    expect(md).toContain("costs ours 4.00× the CPU of a bare relay message");
    // A system without a step at ours' rate is read off the line between its steps either side.
    const routing = ramp("ejabberd-routing", 4000);
    routing.steps[0]!.targetCpuPct = 40;
    routing.steps[0]!.loadGenCpuPct = 20;
    routing.steps[1]!.targetCpuPct = 80;
    routing.steps[1]!.loadGenCpuPct = 40;
    run.oneToOne = run.oneToOne.map((r) => (r.target === "ejabberd-routing" ? routing : r));
    expect(renderMarkdown(run, [], {})).toContain(
      "- `ejabberd-routing`: the server used 60% of a core (100 µs of CPU per message), the " +
        "load generator 30% (50 µs per message), read off a straight line between its 4,000 " +
        "and 8,000 msgs/s steps.",
    );
    // The bounds close with a pointer to the study, which follows the profiling section.
    expect(md).toContain(`is in *${CEILING_STUDY_TITLE}* below.`);
    expect(md.indexOf(`## ${CEILING_STUDY_TITLE}`)).toBeGreaterThan(
      md.indexOf("## Profiling: before and after"),
    );
    // Without CPU readings there is nothing to explain, and no study to point to.
    const bare = renderMarkdown(fakeRun(), [], {});
    expect(bare).not.toContain("What bounds 1:1");
    expect(bare).not.toContain(CEILING_STUDY_TITLE);
  });

  it("adds what the relay and ejabberd spent at their own higher ceilings", () => {
    const run = fakeRun();
    const at = (rate: number, serverPct: number, genPct: number, ok = true): RateStep => ({
      ...run.oneToOne[0]!.steps[0]!,
      offeredPerSec: rate,
      targetCpuPct: serverPct,
      loadGenCpuPct: genPct,
      withinSlo: ok,
    });
    Object.assign(run.oneToOne[0]!.steps[0]!, { targetCpuPct: 120, loadGenCpuPct: 60 });
    const relay = ramp("relay", 12_000);
    relay.steps = [at(6000, 30, 40), at(12_000, 36, 50), at(24_000, 90, 95, false)];
    const routing = ramp("ejabberd-routing", 9000);
    routing.steps = [at(6000, 60, 30), at(9000, 63, 40), at(18_000, 150, 60, false)];
    run.oneToOne = [run.oneToOne[0]!, relay, routing];
    const md = renderMarkdown(run, [], {});
    // 36% over 12,000 msgs/s is 30 µs, the generator's 50% 42 µs; 63% over 9,000 is 70 µs.
    expect(md).toContain(
      "so the ratio of sustained rates follows the ratio of CPU per message, and goes further " +
        "as the relay's cost per message falls with its load (30 µs, and the load generator's " +
        "42, at its 12,000 msgs/s).",
    );
    expect(md).toContain("and it sustained 9,000 msgs/s, spending 70 µs per message there.");
    // Ceilings at ours' own rate add nothing.
    relay.sustainedPerSec = 6000;
    routing.sustainedPerSec = 6000;
    const same = renderMarkdown(run, [], {});
    expect(same).toContain("follows the ratio of CPU per message.");
    expect(same).not.toContain("per message there");
  });

  it("states the CPU per message each missed 1:1 target leaves ours and the load generator", () => {
    const run = fakeRun();
    run.machine.cores = 2;
    // ours at 6,000 msgs/s: 120% of a core is 200 µs a message, the load generator's 30% 50 µs.
    Object.assign(run.oneToOne[0]!.steps[0]!, { targetCpuPct: 120, loadGenCpuPct: 30 });
    Object.assign(run.oneToOne[0]!.steps[1]!, {
      targetCpuPct: 150,
      loadGenCpuPct: 40,
      eventLoopCpuPct: 90,
    });
    const routing = ramp("ejabberd-routing", 9000);
    Object.assign(routing.steps[0]!, { targetCpuPct: 130, loadGenCpuPct: 55 });
    run.oneToOne = [run.oneToOne[0]!, routing, ramp("relay", 40_000)];
    const md = renderMarkdown(run, [], {});
    // 200% over 9,000 msgs/s is 222 µs a message for both, 11% under ours' 200 + 50.
    // Half the relay's 40,000 is 20,000: 100 µs, 60% under 250.
    expect(md).toContain(
      "The budget: 2 cores give 200% of a core; at ejabberd's routing-only rate, 9,000 msgs/s, " +
        "that is 222 µs of CPU per message for the server and the load generator together, 11% " +
        "less than the two spent at ours' ceiling, 250 (200 and 50); at half the relay's rate, " +
        "20,000 msgs/s, 100 µs of CPU per message, 60% less than 250. The load generator's " +
        "share is part of it, and its cost per message falls as the rate rises, so these are " +
        "rough bounds, and they take every cycle of both cores: at its 9,000 msgs/s ejabberd's " +
        "server and the load generator used 185% of the 200% (130% and 55%) within the SLO, " +
        "ours' server and the load generator 150% at ours' ceiling and 190% at the step over " +
        "the SLO.",
    );
    expect(md).not.toContain("more than the two spent");
    expect(md).not.toContain("CPU to spare");
    // A budget above what ours spent says so, and that the tail, not the CPU, broke the ramp.
    const slowDay = ramp("ejabberd-routing", 7000);
    Object.assign(slowDay.steps[0]!, { targetCpuPct: 130, loadGenCpuPct: 55 });
    run.oneToOne = [run.oneToOne[0]!, slowDay, ramp("relay", 40_000)];
    const roomy = renderMarkdown(run, [], {});
    // 200% over 7,000 msgs/s is 286 µs a message, 14% over ours' 250.
    expect(roomy).toContain(
      "that is 286 µs of CPU per message for the server and the load generator together, 14% " +
        "more than the two spent at ours' ceiling, 250 (200 and 50);",
    );
    expect(roomy).toContain("but ours' ramp broke first with CPU to spare");
    // A target ours met leaves no budget line; none at all when every target was met.
    run.oneToOne = [run.oneToOne[0]!, routing, ramp("relay", 10_000)];
    expect(renderMarkdown(run, [], {})).not.toContain("half the relay's rate");
    run.oneToOne = [run.oneToOne[0]!, ramp("ejabberd-routing", 5000), ramp("relay", 10_000)];
    expect(renderMarkdown(run, [], {})).not.toContain("The budget:");
  });

  it("sets what each budget leaves once the relay's sockets are paid beside the store's probed floor", () => {
    const run = fakeRun();
    run.machine.cores = 2;
    Object.assign(run.oneToOne[0]!.steps[0]!, { targetCpuPct: 120, loadGenCpuPct: 30 });
    const routing = ramp("ejabberd-routing", 9000);
    const relay = ramp("relay", 40_000);
    const step = (offeredPerSec: number, targetCpuPct: number, loadGenCpuPct: number) => ({
      ...relay.steps[0]!,
      offeredPerSec,
      achievedPerSec: offeredPerSec,
      targetCpuPct,
      loadGenCpuPct,
    });
    // 20 µs of the relay's server and 30 of the load generator per message at every step.
    relay.steps = [
      step(4000, 8, 12),
      step(8000, 16, 24),
      step(10_000, 20, 30),
      step(20_000, 40, 60),
      ...relay.steps,
    ];
    run.oneToOne = [run.oneToOne[0]!, routing, relay];
    // Without a probe (older results) the paragraph is left out.
    expect(renderMarkdown(run, [], {})).not.toContain("Sockets are paid for first");
    run.storeFloor = { eventsPerCommit: 64, events: 40_000, cpuUsPerEvent: 30, committed: 45_056 };
    // 222 µs at 9,000 msgs/s less 50 leaves 172; 100 at 20,000 less 50 leaves 50.
    const fits = renderMarkdown(run, [], {});
    expect(fits).toContain(
      "Sockets are paid for first, and the relay shows what they cost: its server and the load " +
        "generator spent 50 µs per message at ejabberd's rate (20 and 30, between its 8,000 and " +
        "10,000 msgs/s steps), leaving 172 µs of the budget, and 50 at half the relay's rate " +
        "(20 and 30), leaving 50, for everything ours adds to a message (authorization, " +
        "sequencing, durability, its framing). At ours' ceiling, 6,000 msgs/s, ours and the " +
        "load generator spent 200 µs per message more than the relay and the load generator at " +
        "that rate (250 against 50). Ours' store alone spent 30 µs of CPU per event " +
        "at its cheapest, 64 events per commit with nothing else running",
    );
    expect(fits).toContain("the store's floor fits in each budget");
    expect(fits).not.toContain("does not fit in the cores");
    run.storeFloor.cpuUsPerEvent = 60;
    const short = renderMarkdown(run, [], {});
    expect(short).toContain(
      "so at half the relay's rate a durable ack through this store does not fit in the cores " +
        "even if ours did nothing else per message.",
    );
    expect(short).not.toContain("fits in each budget");
    // A rate the relay's steps do not bracket gets no clause; none bracketed, no paragraph.
    relay.steps = relay.steps.slice(3);
    const one = renderMarkdown(run, [], {});
    expect(one).toContain(
      "spent 50 µs per message at half the relay's rate (20 and 30), leaving 50 µs",
    );
    expect(one).not.toContain("at ejabberd's rate (");
    expect(one).not.toContain("ours and the load generator spent");
    relay.steps = relay.steps.slice(1);
    expect(renderMarkdown(run, [], {})).not.toContain("Sockets are paid for first");
  });

  it("shows a Node system's event loop beside its whole CPU, and where ours' ramp broke", () => {
    const run = fakeRun();
    const [ok, over] = run.oneToOne[0]!.steps as [RateStep, RateStep];
    Object.assign(ok, { targetCpuPct: 120, eventLoopCpuPct: 70, loadGenCpuPct: 60 });
    Object.assign(over, { targetCpuPct: 150, eventLoopCpuPct: 97, loadGenCpuPct: 80 });
    run.oneToOne[1]!.steps[0]!.targetCpuPct = 60;
    run.oneToOne[1]!.steps[1]!.targetCpuPct = 90;
    const md = renderMarkdown(run, [], {});
    expect(md).toContain(
      "Its schedulers run that work on both cores; of ours' 120%, 70% runs on its one event " +
        "loop (below).",
    );
    expect(md).toContain(
      "- `ours`: the server used 120% of a core (200 µs of CPU per message; its event loop, " +
        "the main thread, 70% of a core), the load generator 60% (100 µs per message).",
    );
    expect(md).toContain(
      "At 12,000 msgs/s, the step over the SLO that ended ours' ramp, its event loop used " +
        "97% of a core (70% at 6,000); the whole server used 150% and the load generator 80%, " +
        "of the machine's 800%.",
    );
    Object.assign(over, { eventLoopWaitPct: 18, loadGenWaitPct: 35 });
    expect(renderMarkdown(run, [], {})).toContain(
      "its event loop used 97% of a core (70% at 6,000) and waited for a CPU, runnable, 18% " +
        "of the time; the whole server used 150% and the load generator 80% (each of its " +
        "event loops waited 35% of the time), of the machine's 800%.",
    );
    // Ours' step table gains the column; ejabberd's, with no event loop read, does not.
    expect(md).toContain("| Server CPU % | Event loop CPU % | Load gen CPU % |");
    expect(md.match(/Event loop CPU %/g)).toHaveLength(1);
    expect(row(md, "6,000 |").slice(-4)).toEqual(["120", "70", "60", "✓"]);
    expect(md).toContain("for ours and the relay also its main thread");
    // Results without event-loop readings read as before.
    const before = fakeRun();
    before.oneToOne[0]!.steps[0]!.targetCpuPct = 120;
    const old = renderMarkdown(before, [], {});
    expect(old).not.toContain("Event loop CPU %");
    expect(old).not.toContain("its event loop");
    expect(old).not.toContain("for ours and the relay also its main thread");
  });

  it("formats latencies in ms and references only the charts it is given", () => {
    const md = renderMarkdown(fakeRun(), [], { oneToOne: "bench/one-to-one.svg" });
    expect(md).toContain("](bench/one-to-one.svg)");
    expect(md).not.toContain("group-fanout.svg");
    // ours' first 1:1 step: ack p99 12,345 µs, deliver p99 20,000 µs, p99.9 40,000 µs.
    expect(md).toContain(
      "| 6,000 | 6,000 | 3.09 | 12.3 | 24.7 | 5.00 | 20.0 | 40.0 | 0 | — | — | ✓ |",
    );
    expect(md).toContain("No profiling fixes recorded");
    expect(md).toContain("npm run bench -- --quick");
  });

  it("lists profiling fixes before → after", () => {
    const fix: ProfileFix = {
      title: "Batch fsync",
      detail: "one fsync per tick instead of per message.",
      method: "1:1 ramp, 100 pairs",
      measures: [
        { metric: "sustained 1:1", unit: "msgs/s", before: 4000, after: 6000 },
        { metric: "CPU per message", unit: "µs", before: 90, after: 45, lowerIsBetter: true },
        { metric: "RSS per session", unit: "KB", before: -0.9, after: 2.1, lowerIsBetter: true },
      ],
    };
    const md = renderMarkdown(fakeRun(), [fix], {});
    expect(row(md, "Batch fsync").slice(1)).toEqual([
      "sustained 1:1 (msgs/s)",
      "4,000",
      "6,000",
      "1.50×",
    ]);
    expect(row(md, " | CPU per message (µs)").slice(1)).toEqual([
      "CPU per message (µs)",
      "90.0",
      "45.0",
      "2.00× less",
    ]);
    // A negative reading (a collection during the hold) has no ratio.
    expect(row(md, " | RSS per session (KB)").slice(1)).toEqual([
      "RSS per session (KB)",
      "-0.9",
      "2.1",
      "—",
    ]);
    expect(md).not.toContain("No profiling fixes recorded");
  });

  it("shows the server's CPU per history event, and — where a phase was not measured", () => {
    const md = renderMarkdown(fakeRun(), [], {});
    const paging = row(md, "`ours` | 50 | 800 |");
    const resume = row(md, "`ours` | 20 | 200 |");
    // 80% of a core over 40,000 events/s: 20 µs per event.
    expect(paging.slice(-3)).toEqual(["80", "70", "20.0"]);
    expect(resume.slice(-3)).toEqual(["—", "—", "—"]);
  });

  it("renders a run with no results at all", () => {
    const run = fakeRun();
    run.oneToOne = [];
    run.groupFanout.results = [];
    run.idle = [];
    run.reconnect = [];
    run.history = [];
    const md = renderMarkdown(run, [], {});
    expect(row(md, "1:1 sustained msgs/s").slice(1)).toEqual(Array(7).fill("—"));
    expect(status(md, "(4) Reconnect storm")).toBe("—");
    expect(md).toContain("No 1:1 results in this run.");
  });
});

describe("formatting", () => {
  it("groups thousands and converts µs to ms", () => {
    expect(fmtNum(1_234_567)).toBe("1,234,567");
    expect(fmtNum(999.96, 1)).toBe("1,000.0");
    expect(fmtMs(1234)).toBe("1.23");
    expect(fmtMs(123_456)).toBe("123.5");
  });
});

describe("lineChartSvg", () => {
  const svg = lineChartSvg({
    title: "p99 by rate",
    xLabel: "offered msgs/s",
    yLabel: "p99 ms",
    series: [
      {
        name: "ours",
        points: [
          { x: 1000, y: 10 },
          { x: 2000, y: 100 },
        ],
      },
      { name: "ejabberd-routing", points: [{ x: 1000, y: 20 }] },
      { name: "relay", points: [] },
    ],
    threshold: { y: 50, label: "SLO 50 ms" },
  });

  it("is a self-contained svg with one polyline per series", () => {
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(3);
    expect(svg.match(/<g /g)?.length).toBe(svg.match(/<\/g>/g)?.length);
    for (const name of ["ours", "ejabberd-routing", "relay"]) {
      expect(svg).toContain(`data-series="${name}"`);
    }
    // ours draws through both of its points, in its own color.
    expect(svg).toMatch(/points="[\d.]+,[\d.]+ [\d.]+,[\d.]+" fill="none" stroke="#2563eb"/);
  });

  it("draws the threshold as a dashed line at its y value", () => {
    // y range 0..100 over a 260 px plot starting at 44: 50 sits at 44 + 130.
    expect(svg).toMatch(/<line class="threshold" x1="76" y1="174" x2="[\d.]+" y2="174"/);
    expect(svg).toContain('stroke-dasharray="6 4"');
    expect(svg).toContain("SLO 50 ms");
  });

  it("spaces a log axis by decades", () => {
    const log = lineChartSvg({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      logY: true,
      series: [{ name: "ours", points: [{ x: 1, y: 1 }] }],
      threshold: { y: 10, label: "10" },
    });
    // Domain 1..10: y = 10 is the plot top.
    expect(log).toMatch(/<line class="threshold" x1="76" y1="44" /);
  });

  it("says no data for empty input", () => {
    const empty = lineChartSvg({ title: "t", xLabel: "x", yLabel: "y", series: [] });
    expect(empty).toContain("no data");
    expect(empty).not.toContain("<polyline");
  });
});

describe("barChartSvg", () => {
  it("draws one bar per entry with the threshold line", () => {
    const svg = barChartSvg({
      title: "KB per connection",
      yLabel: "KB",
      bars: [
        { label: "ours", value: 5 },
        { label: "ejabberd-routing", value: 20 },
      ],
      threshold: { value: 10, label: "target 10 KB" },
    });
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.match(/<rect class="bar"/g)).toHaveLength(2);
    // 20 plus 10% headroom rounds up to a 0..25 axis over 260 px from 44: 10 sits at 200.
    expect(svg).toMatch(/<line class="threshold" x1="76" y1="200"/);
  });
});

describe("writeReport", () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("writes the markdown and the charts it links to", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "bench-report-"));
    const docsDir = path.join(dir, "docs");
    const { markdownPath, charts } = await writeReport(fakeRun(), {
      docsDir,
      profile: [],
      resultsFile: path.join(dir, "bench", "results", "latest.json"),
    });
    expect(markdownPath).toBe(path.join(docsDir, "BENCHMARKS.md"));
    expect(charts.map((c) => path.relative(docsDir, c)).sort()).toEqual([
      path.join("bench", "group-fanout.svg"),
      path.join("bench", "idle-memory.svg"),
      path.join("bench", "one-to-one.svg"),
    ]);
    const md = await readFile(markdownPath, "utf8");
    for (const link of md.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)) {
      const svg = await readFile(path.join(docsDir, link[1]!), "utf8");
      expect(svg.startsWith("<svg")).toBe(true);
    }
    expect(md.match(/!\[/g)).toHaveLength(3);
    expect(md).toContain("(../bench/results/latest.json)");
  });
});

describe("earlier full runs", () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("digest a run's headline numbers, keep the newest runs once each, and show them with ratios", () => {
    const run = fakeRun();
    const d = digestOf(run);
    expect(d).toEqual({
      startedAt: run.startedAt,
      gitCommit: "abc1234",
      durationMs: 754_000,
      oneToOne: { ours: 6000, "ejabberd-routing": 3000, "ejabberd-archive": 2500 },
      group: { ours: 20_000, "ejabberd-routing": 12_000 },
      stormMs: 4200,
    });
    const at = (i: number) => ({
      ...d,
      startedAt: `2025-03-0${i}T00:00:00.000Z`,
      gitCommit: `rev${i}`,
    });
    // Out of order in, oldest first out; the same run again replaces itself; at most `keep`.
    let runs = withDigest([at(3), at(1)], at(2));
    expect(runs.map((r) => r.gitCommit)).toEqual(["rev1", "rev2", "rev3"]);
    runs = withDigest(runs, { ...at(3), oneToOne: { ours: 1 } });
    expect(runs).toHaveLength(3);
    expect(runs.at(-1)?.oneToOne).toEqual({ ours: 1 });
    expect(withDigest(runs, at(4), 2).map((r) => r.gitCommit)).toEqual(["rev3", "rev4"]);

    const md = renderMarkdown(run, [], {}, { runs: [at(1), { ...at(2), oneToOne: {} }] });
    expect(md).toContain("## Earlier full runs");
    const first = md.split("\n").find((l) => l.includes("`rev1`"));
    const cells = first!.slice(2, -2).split(" | ");
    // ours, relay (absent), routing, archive, ours/routing, ours/relay, group ours, MUC,
    // storm, disk and CPU (not probed in this run)
    expect(cells.slice(3)).toEqual([
      "6,000",
      "—",
      "3,000",
      "2,500",
      "2.00×",
      "—",
      "20,000",
      "12,000",
      "4,200",
      "—",
      "—",
    ]);
    expect(md.split("\n").find((l) => l.includes("`rev2`"))).toContain("| — | — | — | — | — | — |");
    // One run is no record of how runs vary.
    expect(renderMarkdown(run, [], {}, { runs: [at(1)] })).not.toContain("Earlier full runs");
  });

  it("carry the disk's commit latency before ours' 1:1 ramp, and the report shows the probes", () => {
    const run = fakeRun();
    run.disk = [
      { before: "one-to-one/ours", p50Us: 120, p99Us: 1_480, maxUs: 3_100 },
      { before: "one-to-one/relay", p50Us: 100, p99Us: 210, maxUs: 900 },
    ];
    // CPU readings at ours' sustained step, so the report explains what bounds 1:1.
    run.oneToOne[0]!.steps[0]!.targetCpuPct = 120;
    run.oneToOne[0]!.steps[0]!.loadGenCpuPct = 60;
    const d = digestOf(run);
    expect(d.fsyncP99UsBeforeOurs).toBe(1_480);
    const md = renderMarkdown(run, [], {}, { runs: [{ ...d, gitCommit: "old" }, d] });
    expect(md).toContain("p99 0.21–1.48 ms over 2 probes");
    expect(md).toContain("before ours' 1:1 ramp p50 0.12 ms, p99 1.48 ms");
    expect(md).toContain("the disk took 0.12 ms at p50 and 1.48 ms at p99 (3.10 at most)");
    const row = md.split("\n").find((l) => l.includes("`old`"));
    expect(row?.slice(2, -2).split(" | ").at(-2)).toBe("1.48");
  });

  it("carry the CPU probe before ours' 1:1 ramp, and the report shows the probes' spread", () => {
    const run = fakeRun();
    expect(renderMarkdown(run, [], {})).not.toContain("CPU speed probe");
    run.cpu = [
      { before: "one-to-one/ours", medianMs: 31.4, maxMs: 40 },
      { before: "one-to-one/relay", medianMs: 24.2, maxMs: 30 },
    ];
    const d = digestOf(run);
    expect(d.cpuProbeMsBeforeOurs).toBe(31.4);
    const md = renderMarkdown(run, [], {}, { runs: [{ ...d, gitCommit: "old" }, d] });
    expect(md).toContain("took 24.2–31.4 ms at the median over 2 probes");
    expect(md).toContain("before ours' 1:1 ramp 31.4 ms");
    const row = md.split("\n").find((l) => l.includes("`old`"));
    expect(row?.slice(2, -2).split(" | ").at(-1)).toBe("31.4");
  });

  it("read the kept record: none before the first run, and a clear error for another file", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "bench-runs-"));
    const file = path.join(dir, "runs-full.json");
    expect(readRunDigests(file)).toEqual([]);
    await writeFile(file, JSON.stringify([digestOf(fakeRun())]));
    expect(readRunDigests(file)[0]?.gitCommit).toBe("abc1234");
    await writeFile(file, JSON.stringify({ startedAt: "x" }));
    expect(() => readRunDigests(file)).toThrow(/expected an array of run digests/);
  });
});

describe("medianEach (bench:profile --rounds)", () => {
  it("takes each number's median on its own, so one stalled run moves none of them", () => {
    const runs = [
      { sustained: 7000, cpuUs: 190 },
      { sustained: 2000, cpuUs: 185 },
      { sustained: 7500, cpuUs: 900 },
    ];
    expect(medianEach(runs)).toEqual({ sustained: 7000, cpuUs: 190 });
    expect(runs[0]).toEqual({ sustained: 7000, cpuUs: 190 });
  });

  it("averages the middle two of an even count, returns a single run as it is, and refuses none", () => {
    expect(medianEach([{ x: 4 }, { x: 1 }, { x: 10 }, { x: 2 }])).toEqual({ x: 3 });
    expect(medianEach([{ x: 5, y: 0.5 }])).toEqual({ x: 5, y: 0.5 });
    expect(() => medianEach([])).toThrow(/no runs/);
  });
});
