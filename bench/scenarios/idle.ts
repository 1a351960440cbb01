import { type BenchContext, closeClients, openClients, openStreams } from "../lib/context.js";
import type { IdleResult, TargetName } from "../lib/results.js";
import type { ClientSpec } from "../worker.js";
import { clientSpec, type Started, startTarget } from "./targets.js";

/** The production heartbeat interval (CHAT_HEARTBEAT_INTERVAL_MS default). */
const heartbeatIntervalMs = 25_000;

/**
 * How idle sessions are held: `sockets` is one connection per session (all
 * targets). The rest are ours only, `idleStreamsPerConnection` sessions to an
 * HTTP/2 connection, as a proxy in front of the edge carries them, so the
 * open-file limit no longer caps the count: `streams` as gRPC Session streams,
 * `subscribe-streams` as server-streaming Subscribe calls heartbeating with
 * unary calls (a client that sends with unary calls), and
 * `connect-subscribe-streams` as those calls in the Connect protocol (a
 * browser behind a proxy).
 */
export type IdleTransport =
  | "sockets"
  | "streams"
  | "subscribe-streams"
  | "connect-subscribe-streams";

interface Held {
  t: Started;
  transport: IdleTransport;
  n: number;
  /** Worker indexes of this target's clients: [firstIndex, firstIndex + n). */
  firstIndex: number;
  rssBase: number;
  opened: { opened: number; failed: number; errors: string[]; ms: number };
}

const methodOf = (transport: IdleTransport) =>
  transport === "subscribe-streams"
    ? "subscribe"
    : transport === "connect-subscribe-streams"
      ? "connect-subscribe"
      : "session";

/**
 * Starts the target, opens its idle sessions and starts heartbeats for every
 * session the workers hold (the interval's spread starts over, earlier
 * sessions first, so none goes silent for long).
 */
async function openIdle(
  ctx: BenchContext,
  name: TargetName,
  transport: IdleTransport,
  firstIndex: number,
): Promise<Held | undefined> {
  const method = methodOf(transport);
  const n =
    transport === "sockets"
      ? ctx.scale.idleSessions
      : method === "session"
        ? ctx.scale.idleStreams
        : ctx.scale.idleSubscribeStreams;
  const t = await startTarget(ctx, name, n, "idle");
  if (!t) return undefined;
  try {
    const clients: ClientSpec[] = [];
    for (let i = 0; i < n; i++) clients.push(await clientSpec(t, i, undefined, firstIndex + i));
    const rssBase = await t.rss();
    ctx.progress(
      `${name}: opening ${n.toLocaleString()} idle sessions${transport === "sockets" ? "" : ` as gRPC ${method} streams`}`,
    );
    const opened =
      transport === "sockets"
        ? await openClients(ctx, t.spec, clients, undefined, 64)
        : await openStreams(ctx, t.spec, clients, ctx.scale.idleStreamsPerConnection, 64, method);
    await Promise.all(
      ctx.workers.map((w) => w.rpc("heartbeats", { intervalMs: heartbeatIntervalMs })),
    );
    return { t, transport, n, firstIndex, rssBase, opened };
  } catch (err) {
    await t.stop();
    throw err;
  }
}

async function hold(ctx: BenchContext, label: string, sessions: number) {
  const holdUntil = Date.now() + ctx.scale.idleHoldMs;
  while (Date.now() < holdUntil) {
    ctx.progress(
      `${label}: holding ${sessions.toLocaleString()} sessions, ${Math.ceil((holdUntil - Date.now()) / 1000)} s left`,
    );
    await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, holdUntil - Date.now()))));
  }
}

async function measure(ctx: BenchContext, h: Held, together: number): Promise<IdleResult> {
  const { t, n, transport, opened } = h;
  const status = await Promise.all(
    ctx.workers.map((w) =>
      w.rpc<{ alive: number; total: number }>("status", {
        from: h.firstIndex,
        to: h.firstIndex + n,
      }),
    ),
  );
  const held = status.reduce((a, s) => a + s.alive, 0);
  const rssHeld = await t.rss();
  const method = methodOf(transport);
  const result: IdleResult = {
    target: t.name,
    attempted: n,
    held,
    rssBaseBytes: h.rssBase,
    rssHeldBytes: rssHeld,
    rssPerConnBytes: held ? Math.round((rssHeld - h.rssBase) / held) : 0,
    heartbeatIntervalMs,
    holdMs: ctx.scale.idleHoldMs,
    connectPerSec: Math.round(opened.opened / (opened.ms / 1000)),
    ...(transport === "sockets"
      ? {}
      : {
          transport:
            method === "subscribe"
              ? ("grpc-subscribe-streams" as const)
              : method === "connect-subscribe"
                ? ("connect-subscribe-streams" as const)
                : ("grpc-streams" as const),
          connections: Math.ceil(n / ctx.scale.idleStreamsPerConnection),
        }),
    ...(together > 1 ? { heldAlongside: together - 1 } : {}),
  };
  if (opened.failed)
    result.notes = [`${opened.failed} sessions failed to open: ${opened.errors[0]}`];
  ctx.log(
    `${t.name}${transport === "sockets" ? "" : ` ${transport}`} idle: held ${held}/${n}, ${(result.rssPerConnBytes / 1024).toFixed(1)} KB/conn, connect ${result.connectPerSec}/s`,
  );
  return result;
}

/**
 * Idle connections: as many sessions as one process may hold here, each
 * heartbeating at the production interval, held past one interval; RSS per
 * connection is the growth over the server's baseline (after a full GC).
 */
export async function idle(
  ctx: BenchContext,
  name: TargetName,
  transport: IdleTransport = "sockets",
): Promise<IdleResult | undefined> {
  return (await idleTogether(ctx, name, [transport]))[0];
}

/**
 * The same for several transports of one target at once, each in a server
 * process of its own, so one hold covers them all (each RSS is its own
 * process's). They open one after another; a later one opens while the
 * earlier ones hold and heartbeat, which its setup rate includes.
 */
export async function idleTogether(
  ctx: BenchContext,
  name: TargetName,
  transports: IdleTransport[],
): Promise<IdleResult[]> {
  const held: Held[] = [];
  try {
    let firstIndex = 0;
    for (const transport of transports) {
      const h = await openIdle(ctx, name, transport, firstIndex);
      if (!h) break;
      held.push(h);
      firstIndex += h.n;
    }
    if (held.length === 0) return [];
    await hold(
      ctx,
      name,
      held.reduce((a, h) => a + h.opened.opened, 0),
    );
    const results: IdleResult[] = [];
    for (const h of held) results.push(await measure(ctx, h, held.length));
    await closeClients(ctx);
    return results;
  } finally {
    await Promise.all(held.map((h) => h.t.stop()));
  }
}
