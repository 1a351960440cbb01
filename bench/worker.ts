/**
 * Load worker (a child process of the bench): holds client connections to one
 * target at a time and drives open-loop sends. The coordinator talks to it
 * over IPC (see bench/lib/procs.ts makeRpc/serveRpc).
 */

import type http2 from "node:http2";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ChatService, HistoryDirection } from "../gen/chat/v1/chat_service_pb.js";
import { connectOurs } from "./clients/ours-client.js";
import {
  connectHttp2,
  heartbeatFailures,
  openSessionStream,
  resetHeartbeatFailures,
} from "./clients/ours-grpc-client.js";
import { connectRelay } from "./clients/relay-client.js";
import { connectXmpp } from "./clients/xmpp-client.js";
import { encode, type Histogram, newHistogram, nowUs, record } from "./lib/histogram.js";
import { serveRpc, sourceAddress } from "./lib/procs.js";

export type TargetSpec =
  | { kind: "ours"; host: string; port: number }
  | { kind: "relay"; host: string; port: number }
  | { kind: "xmpp"; host: string; port: number; domain: string; mucDomain: string };

/**
 * One client: `user` is u<i>; `token` for ours; `groups` to join (relay,
 * xmpp); `port` when it connects elsewhere than the target's port (an edge
 * of a split deployment; ours over WebSocket).
 */
export interface ClientSpec {
  index: number;
  user: string;
  token?: string;
  groups?: string[];
  port?: number;
}

/** A sender and where it sends: a conversation id (ours), `u:/g:` (relay), a JID (xmpp). */
export interface Route {
  client: number;
  dest: string;
  group?: boolean;
}

export interface StepStats {
  sent: number;
  acked: number;
  delivered: number;
  ack: string;
  deliver: string;
}

interface Conn {
  send(dest: string, body: string, group: boolean): void;
  heartbeat(): void;
  drop(): void;
  close(): void;
  readonly alive: boolean;
}

interface StepState {
  sent: number;
  acked: number;
  delivered: number;
  ack: Histogram;
  deliver: Histogram;
}

let target: TargetSpec | undefined;
const conns = new Map<number, Conn>();
/** HTTP/2 connections that carry several clients' session streams (openStreams). */
const shared: http2.ClientHttp2Session[] = [];
const steps = new Map<number, StepState>();
let routes: Route[] = [];
let heartbeatTimer: NodeJS.Timeout | undefined;
let seq = 0;

function stepState(step: number): StepState {
  let s = steps.get(step);
  if (!s) {
    s = { sent: 0, acked: 0, delivered: 0, ack: newHistogram(), deliver: newHistogram() };
    steps.set(step, s);
  }
  return s;
}

// Bodies are `s<step>:<n>:<intended send time, µs>`: latency counts from the
// time the schedule meant to send, so a stalled sender cannot hide queueing.
function parse(body: string): { step: number; intendedUs: number } | undefined {
  if (body.charCodeAt(0) !== 0x73) return undefined;
  const a = body.indexOf(":");
  const b = body.indexOf(":", a + 1);
  if (a < 0 || b < 0) return undefined;
  return { step: Number(body.slice(1, a)), intendedUs: Number(body.slice(b + 1)) };
}

function onDeliver(body: string) {
  const p = parse(body);
  if (!p) return;
  const s = stepState(p.step);
  s.delivered++;
  record(s.deliver, nowUs() - p.intendedUs);
}

function onAck(body: string) {
  const p = parse(body);
  if (!p) return;
  const s = stepState(p.step);
  s.acked++;
  record(s.ack, nowUs() - p.intendedUs);
}

/**
 * How ours' clients talk, each on a connection of its own: WebSocket; a gRPC
 * Session stream on HTTP/2 (a native app); or, as a web app's Connect client
 * through a proxy, a Connect-protocol Subscribe call with each send a unary
 * Connect `Send` call on the same HTTP/2 connection.
 */
export type OursTransport = "websocket" | "grpc" | "connect";

async function openOne(
  spec: ClientSpec,
  t: TargetSpec,
  transport: OursTransport = "websocket",
): Promise<Conn> {
  const localAddress = sourceAddress(spec.index);
  if (t.kind === "ours" && transport !== "websocket") {
    const session = await connectHttp2({ host: t.host, port: t.port, localAddress });
    try {
      const method = transport === "grpc" ? "session" : "connect-subscribe";
      const s = await openSessionStream(session, spec.token ?? "", undefined, method, {
        onEvent: onDeliver,
        onAck,
        self: spec.user,
      });
      return {
        send: (dest, body) => s.send(dest, `c${seq++}`, body),
        heartbeat: () => s.heartbeat(),
        drop: () => session.destroy(),
        close: () => {
          s.close();
          session.close();
        },
        get alive() {
          return s.alive;
        },
      };
    } catch (err) {
      session.destroy();
      throw err;
    }
  }
  if (t.kind === "ours") {
    const c = await connectOurs({
      host: t.host,
      port: spec.port ?? t.port,
      token: spec.token ?? "",
      localAddress,
      onEvent: (e, fromSync) => {
        if (!fromSync) onDeliver(e.text);
      },
      onAck,
    });
    return {
      send: (dest, body) => c.send(dest, `c${seq++}`, body),
      heartbeat: () => c.heartbeat(),
      drop: () => c.drop(),
      close: () => c.close(),
      get alive() {
        return c.alive;
      },
    };
  }
  if (t.kind === "relay") {
    const c = await connectRelay({
      host: t.host,
      port: t.port,
      user: spec.user,
      localAddress,
      onDeliver,
      onAck,
    });
    for (const g of spec.groups ?? []) c.join(g);
    return {
      send: (dest, body) => c.send(dest, body),
      heartbeat: () => c.heartbeat(),
      drop: () => c.drop(),
      close: () => c.close(),
      get alive() {
        return c.alive;
      },
    };
  }
  const nick = spec.user;
  const c = await connectXmpp({
    host: t.host,
    port: t.port,
    domain: t.domain,
    user: spec.user,
    password: "bench",
    resource: "r",
    localAddress,
    onChat: (_from, body) => onDeliver(body),
    // MUC reflects a message to its sender too: that echo is the sender's ack.
    onGroup: (_room, fromNick, body) => (fromNick === nick ? onAck(body) : onDeliver(body)),
  });
  for (const g of spec.groups ?? []) await c.joinRoom(`${g}@${t.mucDomain}`, nick);
  return {
    send: (dest, body, group) =>
      group ? c.sendGroup(`${dest}@${t.mucDomain}`, body) : c.sendChat(dest, body),
    heartbeat: () => c.heartbeat(),
    drop: () => c.drop(),
    close: () => void c.close(),
    get alive() {
      return c.alive;
    },
  };
}

/** Runs `fn` over items with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>) {
  let i = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]!);
  });
  await Promise.all(lanes);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

serveRpc({
  /** Opens the clients against the target; failures are counted, not thrown. */
  async open(args: {
    target: TargetSpec;
    clients: ClientSpec[];
    concurrency: number;
    transport?: OursTransport;
  }) {
    target = args.target;
    const t0 = nowUs();
    let failed = 0;
    const errors: string[] = [];
    await pool(args.clients, args.concurrency, async (spec) => {
      try {
        conns.set(spec.index, await openOne(spec, args.target, args.transport));
      } catch (err) {
        failed++;
        if (errors.length < 5) errors.push(err instanceof Error ? err.message : String(err));
      }
    });
    return { opened: args.clients.length - failed, failed, errors, ms: (nowUs() - t0) / 1000 };
  },

  /**
   * Opens the clients (ours only) as gRPC Session streams (or Subscribe
   * calls), `perConnection` to an HTTP/2 connection, as a proxy in front of
   * the edge would carry them.
   */
  async openStreams(args: {
    target: TargetSpec;
    clients: ClientSpec[];
    perConnection: number;
    concurrency: number;
    /** Session streams (default), or server-streaming Subscribe calls (gRPC or Connect). */
    method?: "session" | "subscribe" | "connect-subscribe";
  }) {
    const t = args.target;
    if (t.kind !== "ours") throw new Error("session streams are ours only");
    target = t;
    const t0 = nowUs();
    let failed = 0;
    const errors: string[] = [];
    const note = (err: unknown) => {
      failed++;
      if (errors.length < 5) errors.push(err instanceof Error ? err.message : String(err));
    };
    const groups: ClientSpec[][] = [];
    for (let i = 0; i < args.clients.length; i += args.perConnection) {
      groups.push(args.clients.slice(i, i + args.perConnection));
    }
    // Connections open one after another; their streams open `concurrency` at a time.
    for (const group of groups) {
      let session: http2.ClientHttp2Session;
      try {
        session = await connectHttp2({
          host: t.host,
          port: t.port,
          localAddress: sourceAddress(group[0]!.index),
        });
      } catch (err) {
        for (const _ of group) note(err);
        continue;
      }
      shared.push(session);
      await pool(group, args.concurrency, async (spec) => {
        try {
          const s = await openSessionStream(session, spec.token ?? "", undefined, args.method);
          conns.set(spec.index, {
            send: () => {
              throw new Error("session streams here are idle");
            },
            heartbeat: () => s.heartbeat(),
            drop: () => s.close(),
            close: () => s.close(),
            get alive() {
              return s.alive;
            },
          });
        } catch (err) {
          note(err);
        }
      });
    }
    return { opened: args.clients.length - failed, failed, errors, ms: (nowUs() - t0) / 1000 };
  },

  setRoutes(args: { routes: Route[] }) {
    routes = args.routes.filter((r) => conns.has(r.client));
    return routes.length;
  },

  /**
   * One open-loop step: sends at `ratePerSec` for `durationMs`, round-robin
   * over the routes, and answers when the last message is out; the caller
   * waits for late acks and deliveries (`counts`, then `collect`).
   */
  async run(args: { step: number; ratePerSec: number; durationMs: number }) {
    const s = stepState(args.step);
    const start = nowUs() + 1000;
    const total = Math.floor((args.ratePerSec * args.durationMs) / 1000);
    const intervalUs = 1e6 / args.ratePerSec;
    let n = 0;
    let r = 0;
    while (n < total && routes.length > 0) {
      const now = nowUs();
      // Everything the schedule says is due by now goes out, each stamped with its intended time.
      while (n < total && start + n * intervalUs <= now) {
        const route = routes[r++ % routes.length]!;
        const intended = Math.round(start + n * intervalUs);
        conns.get(route.client)?.send(route.dest, `s${args.step}:${n}:${intended}`, !!route.group);
        s.sent++;
        n++;
      }
      // A timer tick, not a spin: the generator shares the cores with the server under test.
      await sleep(1);
    }
    return { sent: s.sent };
  },

  /** A step's counts so far, without its histograms: cheap enough to poll while it drains. */
  counts(args: { step: number }) {
    const s = stepState(args.step);
    return { sent: s.sent, acked: s.acked, delivered: s.delivered };
  },

  /** Stats of a step so far (for deliveries that landed in this worker from elsewhere). */
  collect(args: { step: number }) {
    return stats(args.step);
  },

  heartbeats(args: { intervalMs: number }) {
    clearInterval(heartbeatTimer);
    const all = [...conns.values()];
    // Spread the heartbeats over the interval as real clients would be.
    const tick = 50;
    const perTick = Math.max(1, Math.ceil((all.length * tick) / args.intervalMs));
    let i = 0;
    heartbeatTimer = setInterval(() => {
      for (let k = 0; k < perTick && all.length > 0; k++) all[i++ % all.length]!.heartbeat();
    }, tick);
    return all.length;
  },

  status() {
    let alive = 0;
    for (const c of conns.values()) if (c.alive) alive++;
    return { alive, total: conns.size, heartbeatFailures: heartbeatFailures() };
  },

  async closeAll() {
    clearInterval(heartbeatTimer);
    for (const c of conns.values()) c.close();
    await sleep(200);
    for (const c of conns.values()) c.drop();
    for (const session of shared) session.destroy();
    shared.length = 0;
    conns.clear();
    steps.clear();
    resetHeartbeatFailures();
    routes = [];
    target = undefined;
    return true;
  },

  ...stormOps(),
  ...historyOps(),
});

function stats(step: number): StepStats {
  const s = stepState(step);
  return {
    sent: s.sent,
    acked: s.acked,
    delivered: s.delivered,
    ack: encode(s.ack),
    deliver: encode(s.deliver),
  };
}

/** The reconnect storm (ours only): clients keep per-conversation cursors across a drop. */
function stormOps() {
  interface StormClient {
    spec: ClientSpec;
    cursors: Record<string, number>;
    gaps: number;
    dups: number;
    conn?: { drop(): void; close(): void };
    caughtUpUs?: number;
  }
  const clients: StormClient[] = [];
  let expected: Record<string, number> = {};

  const track =
    (c: StormClient, onCaughtUp?: () => void) => (e: { conversationId: string; seq: number }) => {
      const seqN = e.seq;
      const have = c.cursors[e.conversationId] ?? 0;
      if (seqN <= have) c.dups++;
      else {
        if (seqN > have + 1) c.gaps += seqN - have - 1;
        c.cursors[e.conversationId] = seqN;
      }
      if (onCaughtUp && c.caughtUpUs === undefined && isCaughtUp(c)) onCaughtUp();
    };
  const isCaughtUp = (c: StormClient) =>
    Object.entries(expected).every(
      ([conv, head]) => !(conv in c.cursors) || (c.cursors[conv] ?? 0) >= head,
    );

  return {
    async stormOpen(args: { target: TargetSpec; clients: ClientSpec[]; concurrency: number }) {
      if (args.target.kind !== "ours") throw new Error("the storm drives ours only");
      target = args.target;
      const t = args.target;
      let failed = 0;
      await pool(args.clients, args.concurrency, async (spec) => {
        const c: StormClient = { spec, cursors: {}, gaps: 0, dups: 0 };
        try {
          c.conn = await connectOurs({
            host: t.host,
            port: t.port,
            token: spec.token ?? "",
            localAddress: sourceAddress(spec.index),
            onEvent: track(c),
          });
          clients.push(c);
        } catch {
          failed++;
        }
      });
      return { opened: clients.length, failed };
    },
    stormDrop() {
      for (const c of clients) c.conn?.drop();
      return clients.length;
    },
    /** Reconnects every client at once with its cursors; resolves when all caught up or at the deadline. */
    async stormReconnect(args: { expected: Record<string, number>; deadlineMs: number }) {
      const t = target;
      if (t?.kind !== "ours") throw new Error("no ours target");
      expected = args.expected;
      const startUs = nowUs();
      const perClient = newHistogram();
      let done = 0;
      let connectFailures = 0;
      const all = new Promise<void>((resolveAll) => {
        const deadline = setTimeout(resolveAll, args.deadlineMs);
        const finish = (c: StormClient) => {
          c.caughtUpUs = nowUs();
          record(perClient, c.caughtUpUs - startUs);
          if (++done === clients.length) {
            clearTimeout(deadline);
            resolveAll();
          }
        };
        for (const c of clients) {
          const connect = (attempt: number): void => {
            connectOurs({
              host: t.host,
              port: t.port,
              token: c.spec.token ?? "",
              localAddress: sourceAddress(c.spec.index),
              cursors: { ...c.cursors },
              onEvent: track(c, () => finish(c)),
              timeoutMs: args.deadlineMs,
            }).then(
              (conn) => {
                c.conn = conn;
                if (c.caughtUpUs === undefined && isCaughtUp(c)) finish(c);
              },
              () => {
                // A refused or reset connect is retried, as a real client's backoff would.
                connectFailures++;
                if (attempt < 20 && nowUs() - startUs < args.deadlineMs * 1000) {
                  setTimeout(() => connect(attempt + 1), 100 * (attempt + 1));
                }
              },
            );
          };
          connect(0);
        }
      });
      await all;
      let lost = 0;
      let dups = 0;
      let lastUs = 0;
      for (const c of clients) {
        dups += c.dups;
        lost += c.gaps;
        for (const [conv, head] of Object.entries(expected)) {
          if (conv in c.cursors) lost += Math.max(0, head - (c.cursors[conv] ?? 0));
        }
        if (c.caughtUpUs !== undefined) lastUs = Math.max(lastUs, c.caughtUpUs);
      }
      return {
        clients: clients.length,
        caughtUp: done,
        lost,
        duplicated: dups,
        lastCaughtUpUs: lastUs,
        startUs,
        connectFailures,
        perClient: encode(perClient),
      };
    },
    stormClose() {
      for (const c of clients) c.conn?.close();
      clients.length = 0;
      return true;
    },
  };
}

/** History paging and the resume path (ours only), closed-loop at a fixed concurrency. */
function historyOps() {
  return {
    async historyPaging(args: {
      host: string;
      port: number;
      token: string;
      conversationId: string;
      headSeq: number;
      pageSize: number;
      concurrency: number;
      durationMs: number;
    }) {
      const chat = createClient(
        ChatService,
        createGrpcTransport({ baseUrl: `http://${args.host}:${args.port}` }),
      );
      const headers = { authorization: `Bearer ${args.token}` };
      const h = newHistogram();
      let pages = 0;
      let events = 0;
      const until = nowUs() + args.durationMs * 1000;
      await Promise.all(
        Array.from({ length: args.concurrency }, async (_, lane) => {
          // Each lane walks the conversation backwards from the head, like a scrolling reader.
          let anchor = args.headSeq + 1 - lane * args.pageSize;
          while (nowUs() < until) {
            if (anchor <= 1) anchor = args.headSeq + 1;
            const t0 = nowUs();
            const res = await chat.getHistory(
              {
                conversationId: args.conversationId,
                anchorSeq: BigInt(anchor),
                direction: HistoryDirection.BACKWARD,
                limit: args.pageSize,
              },
              { headers },
            );
            record(h, nowUs() - t0);
            pages++;
            events += res.events.length;
            anchor = res.events.length ? Number(res.events[0]!.seq) : 1;
          }
        }),
      );
      return { pages, events, latency: encode(h) };
    },
    async resumeLoop(args: {
      host: string;
      port: number;
      clients: { index: number; token: string; cursors: Record<string, number> }[];
      concurrency: number;
      durationMs: number;
    }) {
      const h = newHistogram();
      let resumes = 0;
      let events = 0;
      const until = nowUs() + args.durationMs * 1000;
      let k = 0;
      await Promise.all(
        Array.from({ length: args.concurrency }, async () => {
          while (nowUs() < until) {
            const c = args.clients[k++ % args.clients.length]!;
            const t0 = nowUs();
            let n = 0;
            const conn = await connectOurs({
              host: args.host,
              port: args.port,
              token: c.token,
              localAddress: sourceAddress(c.index),
              cursors: c.cursors,
              onEvent: (_e, fromSync) => {
                if (fromSync) n++;
              },
            });
            record(h, nowUs() - t0);
            resumes++;
            events += n;
            conn.close();
          }
        }),
      );
      return { resumes, events, latency: encode(h) };
    },
  };
}
