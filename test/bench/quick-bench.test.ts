import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BenchRun } from "../../bench/lib/results.js";

const repo = join(import.meta.dirname, "../..");
const out = mkdtempSync(join(tmpdir(), "bench-quick-"));
let code = -1;
let stderr = "";
let run: BenchRun;

/** Command lines of every process on the machine. */
function processes(): string[] {
  const cmds: string[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      cmds.push(readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " "));
    } catch {
      // The process ended while we looked.
    }
  }
  return cmds;
}

const benchProcess =
  /bench\/(worker|targets\/ours-server|targets\/relay-server)\.ts|bench_ejabberd/;

beforeAll(async () => {
  // `npm run bench -- --quick`, end to end, writing into a temp dir instead of docs/.
  await new Promise<void>((resolve) => {
    const child = execFile(
      "npx",
      ["tsx", "bench/run.ts", "--quick", `--out=${out}`],
      { cwd: repo, timeout: 280_000, maxBuffer: 16 << 20 },
      (_err, _stdout, err) => {
        code = child.exitCode ?? 1;
        stderr = err;
        resolve();
      },
    );
  });
  run = JSON.parse(readFileSync(join(out, "bench", "results-quick.json"), "utf8")) as BenchRun;
}, 300_000);

afterAll(() => rmSync(out, { recursive: true, force: true }));

describe("npm run bench -- --quick", () => {
  it("finishes cleanly with every scenario run on every system", () => {
    expect(code, stderr.slice(-4000)).toBe(0);
    expect(run.mode).toBe("quick");
    expect(run.skipped).toEqual([]);
    expect(run.oneToOne.map((r) => r.target).sort()).toEqual(
      ["ejabberd-archive", "ejabberd-routing", "ours", "relay"].sort(),
    );
    // Ours once more with native clients' transport: gRPC Session streams.
    expect(run.oneToOneGrpc?.map((r) => r.target)).toEqual(["ours"]);
    // And as web apps' Connect clients: a Subscribe call and a unary Send per message.
    expect(run.oneToOneConnect?.map((r) => r.target)).toEqual(["ours"]);
    // And split: a core and two edge processes sharing Redis.
    expect(run.oneToOneSplit?.map((r) => r.target)).toEqual(["ours"]);
    // And with its store in Cassandra, and with its log in Pulsar.
    expect(run.oneToOneCassandra?.map((r) => r.target)).toEqual(["ours"]);
    expect(run.oneToOnePulsar?.map((r) => r.target)).toEqual(["ours"]);
    expect(run.groupFanout.results.map((r) => r.target).sort()).toEqual(
      ["ejabberd-routing", "ours", "relay"].sort(),
    );
    expect(
      run.idle
        .filter((r) => !r.transport)
        .map((r) => r.target)
        .sort(),
    ).toEqual(["ejabberd-routing", "ours", "relay"]);
    // Ours once more with its sessions as gRPC streams on shared HTTP/2 connections.
    expect(run.idle.filter((r) => r.transport === "grpc-streams").map((r) => r.target)).toEqual([
      "ours",
    ]);
    // And as server-streaming Subscribe calls, as a client that sends with unary calls holds them.
    expect(
      run.idle.filter((r) => r.transport === "grpc-subscribe-streams").map((r) => r.target),
    ).toEqual(["ours"]);
    // And those calls in the Connect protocol, as a browser behind a proxy makes them.
    expect(
      run.idle.filter((r) => r.transport === "connect-subscribe-streams").map((r) => r.target),
    ).toEqual(["ours"]);
    // The idle runs overlapped (each opened while the one before held), results in running order.
    expect(run.idleOverlapped).toBe(true);
    expect(run.idle.map((r) => `${r.target} ${r.transport ?? "sockets"}`)).toEqual([
      "ours grpc-streams",
      "ours grpc-subscribe-streams",
      "ours connect-subscribe-streams",
      "ours sockets",
      "relay sockets",
      "ejabberd-routing sockets",
    ]);
    expect(run.reconnect.map((r) => r.target)).toEqual(["ours"]);
    expect(run.history.map((r) => r.target)).toEqual(["ours"]);
  });

  it("names the commit it ran, marked -dirty when tracked files outside docs/ differ from it", () => {
    const git = (...args: string[]) =>
      execFileSync("git", ["-C", repo, ...args], { encoding: "utf8" }).trim();
    const changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs");
    expect(run.gitCommit).toBe(`${git("rev-parse", "--short", "HEAD")}${changed ? "-dirty" : ""}`);
  });

  it("measured real traffic: messages delivered with latencies, sessions held", () => {
    for (const r of [...run.oneToOne, ...run.groupFanout.results]) {
      const first = r.steps[0]!;
      expect(first.achievedPerSec, r.target).toBeGreaterThan(0);
      expect(first.deliver.count, r.target).toBeGreaterThan(0);
      expect(first.deliver.p50, r.target).toBeGreaterThan(0);
      expect(first.deliver.p99, r.target).toBeGreaterThanOrEqual(first.deliver.p50);
    }
    const ours = run.oneToOne.find((r) => r.target === "ours")!;
    // Our acks are durable commits: every sent message was acknowledged.
    expect(ours.steps[0]!.ack!.count).toBeGreaterThan(0);
    // Over gRPC too: every message sent on a Session stream was acked and delivered.
    const grpc = run.oneToOneGrpc![0]!.steps[0]!;
    expect(grpc.ack!.count).toBeGreaterThan(0);
    expect(grpc.missing).toBe(0);
    expect(grpc.deliver.count).toBe(grpc.ack!.count);
    // From Connect clients each send is a unary call, its answer the ack; a sender's own
    // Subscribe call carries its events too, and those are not counted as deliveries.
    const connect = run.oneToOneConnect![0]!.steps[0]!;
    expect(connect.ack!.count).toBeGreaterThan(0);
    expect(connect.missing).toBe(0);
    expect(connect.deliver.count).toBe(connect.ack!.count);
    // Split, every message crosses from one edge through the core to the other edge.
    const split = run.oneToOneSplit![0]!.steps[0]!;
    expect(split.ack!.count).toBeGreaterThan(0);
    expect(split.missing).toBe(0);
    expect(split.deliver.count).toBe(split.ack!.count);
    expect(split.targetCpuPct).toBeGreaterThan(0);
    expect(split.eventLoopCpuPct).toBeUndefined();
    // On Cassandra, every acknowledged message was delivered once, and Cassandra's CPU counts.
    const onCassandra = run.oneToOneCassandra![0]!.steps[0]!;
    expect(onCassandra.ack!.count).toBeGreaterThan(0);
    expect(onCassandra.missing).toBe(0);
    expect(onCassandra.deliver.count).toBe(onCassandra.ack!.count);
    expect(onCassandra.targetCpuPct).toBeGreaterThan(0);
    // The Cassandra store alone was probed after that ramp, and committed what it timed.
    expect(run.cassandraFloor?.committed).toBeGreaterThanOrEqual(run.cassandraFloor?.events ?? 1);
    expect(run.cassandraFloor?.cassandraCpuUsPerEvent).toBeGreaterThan(0);
    // With the log in Pulsar, every acknowledged message was delivered once, the broker's CPU counted.
    const onPulsar = run.oneToOnePulsar![0]!.steps[0]!;
    expect(onPulsar.ack!.count).toBeGreaterThan(0);
    expect(onPulsar.missing).toBe(0);
    expect(onPulsar.deliver.count).toBe(onPulsar.ack!.count);
    expect(onPulsar.targetCpuPct).toBeGreaterThan(0);
    for (const i of run.idle) {
      expect(i.held, `${i.target} ${i.transport ?? "sockets"}`).toBe(i.attempted);
      expect(i.rssHeldBytes, i.target).toBeGreaterThan(0);
      // Every session opened and every unary heartbeat was answered OK.
      expect(i.openFailures, `${i.target} ${i.transport ?? "sockets"}`).toBe(0);
      expect(i.heartbeatFailures, `${i.target} ${i.transport ?? "sockets"}`).toBe(0);
      // The server's CPU during the hold is read from /proc for every target.
      expect(i.holdCpuPct, i.target).toBeTypeOf("number");
    }
    expect(run.history[0]!.paging.eventsPerSec).toBeGreaterThan(0);
    expect(run.history[0]!.resume.eventsPerResume).toBeGreaterThan(0);
    expect(run.history[0]!.paging.targetCpuPct).toBeGreaterThan(0);
    expect(run.history[0]!.resume.loadGenCpuPct).toBeGreaterThan(0);
    // The disk was probed before every scenario and system that ran.
    const ran = [
      ...run.oneToOne.map((r) => `one-to-one/${r.target}`),
      ...run.groupFanout.results.map((r) => `group-fanout/${r.target}`),
      "reconnect/ours",
      "history/ours",
    ];
    const probed = new Set(run.disk?.map((d) => d.before));
    for (const name of ran) expect(probed.has(name), name).toBe(true);
    for (const d of run.disk ?? []) expect(d.p99Us, d.before).toBeGreaterThan(0);
    // And the CPU's speed, at the same points.
    expect(run.cpu?.map((c) => c.before)).toEqual(run.disk?.map((d) => d.before));
    for (const c of run.cpu ?? []) expect(c.medianMs, c.before).toBeGreaterThan(0);
    // And ours' store's floor per event, once, before ours' 1:1 ramp.
    expect(run.storeFloor?.committed).toBeGreaterThanOrEqual(run.storeFloor?.events ?? 1);
    expect(run.storeFloor?.cpuUsPerEvent).toBeGreaterThan(0);
    // Each scenario on each system was timed, in the order they ran, within the run's duration.
    const timed = run.timings?.map((t) => `${t.scenario}/${t.target}`) ?? [];
    for (const name of ran) expect(timed, name).toContain(name);
    expect(run.timings).toHaveLength(run.disk?.length ?? 0);
    const spent = run.timings?.reduce((a, t) => a + t.ms, 0) ?? 0;
    expect(spent).toBeGreaterThan(0);
    expect(spent).toBeLessThanOrEqual(run.durationMs);
  });

  it("the reconnect storm loses nothing and duplicates nothing", () => {
    const storm = run.reconnect[0]!;
    expect(storm.clients).toBe(400);
    expect(storm.caughtUp).toBe(storm.clients);
    expect(storm.lost).toBe(0);
    expect(storm.duplicated).toBe(0);
  });

  it("writes the report with its charts", () => {
    const md = readFileSync(join(out, "BENCHMARKS.md"), "utf8");
    expect(md).toContain(run.machine.cpuModel);
    expect(md).toContain("ejabberd");
    for (const m of md.matchAll(/\]\((bench\/[^)]+\.svg)\)/g)) {
      expect(existsSync(join(out, m[1]!)), m[1]).toBe(true);
    }
    expect(md).toMatch(/\]\(bench\/one-to-one\.svg\)/);
  });

  it("leaves no process behind", () => {
    expect(processes().filter((p) => benchProcess.test(p))).toEqual([]);
  });
});
