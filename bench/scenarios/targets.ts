import type { BenchContext } from "../lib/context.js";
import type { TargetName } from "../lib/results.js";
import { ejabberdAvailable, startEjabberd } from "../targets/ejabberd.js";
import { startOurs } from "../targets/ours.js";
import { startRelay } from "../targets/relay.js";
import type { ClientSpec, TargetSpec } from "../worker.js";

/** How ours runs, beyond the embedded default. */
export interface OursLayout {
  /** A split deployment with this many edges (and a core). */
  split?: number;
  /** Events and metadata in the test Cassandra instead of SQLite. */
  cassandra?: boolean;
  /** The message log in the test Pulsar instead of in process. */
  pulsar?: boolean;
}

/** A started system under test, as the scenarios need it. */
export interface Started {
  name: TargetName;
  spec: TargetSpec;
  pid: number;
  /** Every process of the system under test (a split's core and edges, Redis, Cassandra); else [pid]. */
  pids: number[];
  /** RSS in bytes; Node targets collect garbage first so it counts live memory only. */
  rss(): Promise<number>;
  stop(): Promise<void>;
  ours?: Awaited<ReturnType<typeof startOurs>>;
}

/** Starts one target with `users` accounts, or returns why it cannot run here. */
export async function startTarget(
  ctx: BenchContext,
  name: TargetName,
  users: number,
  scenario: string,
  layout: OursLayout = {},
): Promise<Started | undefined> {
  if (name === "ours") {
    const ours = await startOurs({
      users,
      ...(ctx.serverRoot ? { serverRoot: ctx.serverRoot } : {}),
      ...(ctx.cpuProfileDir ? { cpuProfileDir: ctx.cpuProfileDir } : {}),
      ...layout,
    });
    return {
      name,
      spec: { kind: "ours", host: ours.host, port: ours.port },
      pid: ours.pid,
      pids: ours.pids,
      rss: () => ours.rssAfterGc(),
      stop: () => ours.stop(),
      ours,
    };
  }
  if (name === "relay") {
    const relay = await startRelay();
    return {
      name,
      spec: { kind: "relay", host: relay.host, port: relay.port },
      pid: relay.pid,
      pids: [relay.pid],
      rss: () => relay.rssAfterGc(),
      stop: () => relay.stop(),
    };
  }
  const avail = ejabberdAvailable();
  if (!avail.ok) {
    ctx.run.skipped.push({ scenario, target: name, reason: avail.reason });
    ctx.log(`SKIPPED ${scenario} on ${name}: ${avail.reason}`);
    return undefined;
  }
  const ej = await startEjabberd({
    mode: name === "ejabberd-archive" ? "archive" : "routing",
    users,
    log: (l) => ctx.log(`[${name}] ${l}`),
  });
  ctx.run.machine.ejabberdVersion ??= ej.version;
  return {
    name,
    spec: {
      kind: "xmpp",
      host: ej.host,
      port: ej.port,
      domain: ej.domain,
      mucDomain: ej.mucDomain,
    },
    pid: ej.pid,
    pids: [ej.pid],
    rss: () => ej.rssBytes(),
    stop: () => ej.stop(),
  };
}

/** Client u<i> on this target: ours needs its signed token, others only the name. */
export async function clientSpec(t: Started, i: number, groups?: string[]): Promise<ClientSpec> {
  return {
    index: i,
    user: `u${i}`,
    ...(groups ? { groups } : {}),
    ...(t.ours ? { token: await t.ours.token(i) } : {}),
    // A split's clients spread over its edges, by index.
    ...(t.ours && t.ours.ports.length > 1 ? { port: t.ours.ports[i % t.ours.ports.length]! } : {}),
  };
}

/** Where a message to user u<i> goes on this target. */
export function directDest(spec: TargetSpec, i: number): string {
  if (spec.kind === "relay") return `u:u${i}`;
  if (spec.kind === "xmpp") return `u${i}@${spec.domain}/r`;
  throw new Error("ours addresses conversations, not users");
}
