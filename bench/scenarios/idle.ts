import { type BenchContext, closeClients, openClients, openStreams } from "../lib/context.js";
import { cpuUsOf } from "../lib/procs.js";
import type { IdleResult, TargetName } from "../lib/results.js";
import type { ClientSpec } from "../worker.js";
import { clientSpec, startTarget } from "./targets.js";

/** The production heartbeat interval (CHAT_HEARTBEAT_INTERVAL_MS default). */
const heartbeatIntervalMs = 25_000;

/** Sessions opened and heartbeating on a started target, from `openIdle`. */
export interface HeldIdle {
  /**
   * Waits out the hold (`idleHoldMs` from when the heartbeats started), then
   * reads RSS and what the workers held, closes the sessions and stops the
   * target, whatever else runs meanwhile.
   */
  finish(): Promise<IdleResult>;
}

/**
 * Idle connections: as many sessions as one process may hold here, each
 * subscribed and heartbeating at the production interval, held past one
 * interval; RSS per connection is the growth over the server's baseline.
 *
 * `streams` (ours only) opens the sessions as gRPC Session streams,
 * `idleStreamsPerConnection` to an HTTP/2 connection, as a proxy in front of
 * the edge carries them: one socket no longer bounds one session, so the
 * open-file limit does not cap the count. `subscribe-streams` does the same
 * with server-streaming Subscribe calls, heartbeating with unary calls, as a
 * client that sends with unary calls holds its session;
 * `connect-subscribe-streams` makes those calls in the Connect protocol, as
 * a browser behind a proxy does.
 *
 * Resolves once the sessions are open and the hold has begun, so the next
 * system can open its own on other workers meanwhile; undefined when the
 * target cannot run here.
 */
export async function openIdle(
  ctx: BenchContext,
  name: TargetName,
  transport: "sockets" | "streams" | "subscribe-streams" | "connect-subscribe-streams" = "sockets",
): Promise<HeldIdle | undefined> {
  const streams = transport !== "sockets";
  const method =
    transport === "subscribe-streams"
      ? "subscribe"
      : transport === "connect-subscribe-streams"
        ? "connect-subscribe"
        : "session";
  const n =
    method !== "session"
      ? ctx.scale.idleSubscribeStreams
      : streams
        ? ctx.scale.idleStreams
        : ctx.scale.idleSessions;
  const perConnection = ctx.scale.idleStreamsPerConnection;
  const t = await startTarget(ctx, name, n, "idle");
  if (!t) return undefined;
  let opened: Awaited<ReturnType<typeof openClients>>;
  let rssBase: number;
  try {
    const clients: ClientSpec[] = [];
    for (let i = 0; i < n; i++) clients.push(await clientSpec(t, i));
    rssBase = await t.rss();
    ctx.progress(
      `${name}: opening ${n.toLocaleString()} idle sessions${streams ? ` as gRPC ${method} streams` : ""}`,
    );
    opened = streams
      ? await openStreams(ctx, t.spec, clients, perConnection, 64, method)
      : await openClients(ctx, t.spec, clients, undefined, 64);
    await Promise.all(
      ctx.workers.map((w) => w.rpc("heartbeats", { intervalMs: heartbeatIntervalMs })),
    );
  } catch (err) {
    await closeClients(ctx).catch(() => undefined);
    await t.stop();
    throw err;
  }
  const holdStart = Date.now();
  const holdCpu0 = cpuUsOf(t.pid);
  const holdUntil = holdStart + ctx.scale.idleHoldMs;
  const measure = async (): Promise<IdleResult> => {
    const status = await Promise.all(
      ctx.workers.map((w) =>
        w.rpc<{ alive: number; total: number; heartbeatFailures: number }>("status"),
      ),
    );
    const failedBeats = status.reduce((a, s) => a + s.heartbeatFailures, 0);
    const holdCpuPct = Math.round(
      ((cpuUsOf(t.pid) - holdCpu0) / ((Date.now() - holdStart) * 1000)) * 100,
    );
    const held = status.reduce((a, s) => a + s.alive, 0);
    const rssHeld = await t.rss();
    const result: IdleResult = {
      target: name,
      attempted: n,
      held,
      rssBaseBytes: rssBase,
      rssHeldBytes: rssHeld,
      rssPerConnBytes: held ? Math.round((rssHeld - rssBase) / held) : 0,
      heartbeatIntervalMs,
      holdMs: ctx.scale.idleHoldMs,
      connectPerSec: Math.round(opened.opened / (opened.ms / 1000)),
      holdCpuPct,
      openFailures: opened.failed,
      heartbeatFailures: failedBeats,
      ...(streams
        ? {
            transport:
              method === "subscribe"
                ? ("grpc-subscribe-streams" as const)
                : method === "connect-subscribe"
                  ? ("connect-subscribe-streams" as const)
                  : ("grpc-streams" as const),
            connections: Math.ceil(n / perConnection),
          }
        : {}),
    };
    const notes: string[] = [];
    if (opened.failed) notes.push(`${opened.failed} sessions failed to open: ${opened.errors[0]}`);
    if (failedBeats > 0) notes.push(`${failedBeats} unary heartbeat calls failed`);
    if (rssHeld < rssBase) {
      notes.push(
        "RSS fell while the sessions were held (the runtime returned more memory than they took): too few sessions to measure memory per connection",
      );
    }
    if (notes.length > 0) result.notes = notes;
    ctx.log(
      `${name} idle: held ${held}/${n}, ${(result.rssPerConnBytes / 1024).toFixed(1)} KB/conn, connect ${result.connectPerSec}/s`,
    );
    return result;
  };
  const finish = async (): Promise<IdleResult> => {
    try {
      while (Date.now() < holdUntil) {
        ctx.progress(
          `${name}: holding ${opened.opened.toLocaleString()} sessions, ${Math.ceil((holdUntil - Date.now()) / 1000)} s left`,
        );
        await new Promise((r) =>
          setTimeout(r, Math.min(1000, Math.max(0, holdUntil - Date.now()))),
        );
      }
      return await measure();
    } finally {
      await closeClients(ctx).catch(() => undefined);
      await t.stop();
    }
  };
  return { finish };
}
