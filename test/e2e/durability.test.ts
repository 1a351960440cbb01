import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import {
  cursor,
  group,
  login,
  openSession,
  openSubscribe,
  readAll,
  type User,
} from "../helpers/clients.js";
import { dropKeyspace, ensureCassandra, ensurePulsar } from "../helpers/dev-env.js";
import type { TestServer } from "../helpers/server.js";
import { embeddedProcess, type ServerProcess, within } from "../helpers/server-process.js";

const unlimited = "1000000";
// Two real server processes per test, a restart and every conversation read back: on
// Cassandra under the full suite's load that has taken 29 s of the default 30.
const slowMs = 60_000;

/** The real server process, with production settings, on `dataDir` and the backend's `env`. */
function serverProcess(dataDir: string, env: Record<string, string>) {
  return embeddedProcess(dataDir, {
    ...env,
    // The load is far above the per-user rate limits.
    CHAT_SEND_PER_SECOND: unlimited,
    CHAT_SEND_BURST: unlimited,
    CHAT_REQUESTS_PER_SECOND: unlimited,
    CHAT_REQUEST_BURST: unlimited,
  });
}

const running: ServerProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const p of running.splice(0)) {
    p.kill();
    await p.exit;
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const names = Array.from({ length: 12 }, (_, i) => `u${i}`);

/** Starts a server on `dataDir` (a new one if omitted) and logs every user in. */
async function boot(
  env: Record<string, string>,
  dataDir = mkdtempSync(join(tmpdir(), "chat-durability-")),
) {
  if (!dirs.includes(dataDir)) dirs.push(dataDir);
  const server = serverProcess(dataDir, env);
  running.push(server);
  const ts = { url: `http://127.0.0.1:${await server.ready()}` } as TestServer;
  const users = await Promise.all(names.map((n) => login(ts, n, `${n}-d`)));
  return { dataDir, server, ts, users };
}

/** A server with six groups every user is in, and a device of u0 following them from seq 0. */
async function setup(env: Record<string, string>) {
  const booted = await boot(env);
  const { ts, users } = booted;
  const convs = await Promise.all(users.slice(0, 6).map((u) => group(u, users)));
  const from0 = convs.map((c) => cursor(c, 0n));
  const listener = await login(ts, "u0", "u0-live");
  const live = openSession(listener.chat, { cursors: from0 });
  await live.frames.synced();
  return { ...booted, convs, from0, listener, live };
}

interface Attempt {
  conv: string;
  cmid: string;
  userId: string;
  state: "pending" | "acked" | "failed";
  seq?: bigint;
  eventId?: string;
}

const message = (conversationId: string, clientMsgId: string) => ({
  conversationId,
  clientMsgId,
  content: { text: "m" },
});

/**
 * Keeps sends in flight until the server goes away: 12 unary callers per `unary` user
 * (gRPC and Connect alternately) and 24 pipelined sends on each `piped` user's Session.
 */
function sendLoad(unary: User[], piped: User[], convs: string[], ackTarget: number) {
  const attempts: Attempt[] = [];
  let reach = () => {};
  const reached = new Promise<void>((r) => {
    reach = r;
  });
  const attempt = (userId: string, cmid: string) => {
    const conv = convs[attempts.length % convs.length]!;
    attempts.push({ conv, cmid, userId, state: "pending" });
    return attempts.at(-1)!;
  };
  let acked = 0;
  const ack = (a: Attempt, e: Event) => {
    Object.assign(a, { state: "acked", seq: e.seq, eventId: e.eventId });
    if (++acked === ackTarget) reach();
  };
  const callers = unary.flatMap((u, i) => {
    const chat = i % 2 ? u.via("connect") : u.chat;
    return Array.from({ length: 12 }, async (_, w) => {
      for (let k = 0; ; k++) {
        const a = attempt(u.userId, `u${w}-${k}`);
        try {
          ack(a, (await chat.send(message(a.conv, a.cmid))).event!);
        } catch {
          a.state = "failed";
          return;
        }
      }
    });
  });
  const streams = piped.map((u) => openSession(u.chat, { subscribe: false }));
  const pipes = streams.map(async ({ frames, send }, i) => {
    const inflight = new Map<string, Attempt>();
    for (let seen = 0, next = 0; ; ) {
      for (const f of frames.all.slice(seen)) {
        const a = inflight.get(f.replyToFrameId);
        inflight.delete(f.replyToFrameId);
        if (a && f.frame.case === "sendAck") ack(a, f.frame.value.event!);
        else if (a) a.state = "failed";
      }
      seen = frames.all.length;
      if (frames.ended) return;
      for (; inflight.size < 24; next++) {
        const a = attempt(piped[i]!.userId, `s${next}`);
        inflight.set(`f${next}`, a);
        send({ frameId: `f${next}`, action: { case: "send", value: message(a.conv, a.cmid) } });
      }
      await frames.until((f) => f.ended || f.all.length > seen, 20_000, "a send ack");
    }
  });
  const all = Promise.all([...callers, ...pipes]);
  all.catch(() => {}); // surfaces in settled()
  return {
    attempts,
    streams,
    reached: within(reached, 20_000, `${ackTarget} acknowledged sends`),
    settled: () => within(all, 15_000, "every send to settle"),
    inFlight: () => attempts.filter((a) => a.state === "pending").length,
  };
}

/**
 * Reads every conversation back: seqs run 1..n, no client_msg_id is stored twice, and each
 * acknowledged send (and each event delivered live) sits at its seq with its event id.
 */
async function verify(reader: User, convs: string[], attempts: Attempt[], seenLive: Event[] = []) {
  const histories = new Map<string, Event[]>();
  for (const c of convs) {
    const h = await readAll(reader, c);
    expect(h.map((e) => e.seq)).toEqual(h.map((_, i) => BigInt(i + 1)));
    const keys = h.filter((e) => e.clientMsgId).map((e) => `${e.actorUserId}/${e.clientMsgId}`);
    expect(keys.length - new Set(keys).size, `${c}: client_msg_ids stored twice`).toBe(0);
    histories.set(c, h);
  }
  const at = (c: string, seq: bigint) => histories.get(c)![Number(seq) - 1]?.eventId;
  const lost = attempts.filter((a) => a.state === "acked" && at(a.conv, a.seq!) !== a.eventId);
  expect(lost, "acknowledged sends lost or moved").toEqual([]);
  const unstored = seenLive.filter((e) => at(e.conversationId, e.seq) !== e.eventId);
  expect(unstored, "events delivered live but not stored").toEqual([]);
  return histories;
}

/**
 * Retries every send at once, as reconnecting clients resend their outboxes:
 * a stored send returns its event, any other gets a new seq.
 */
async function retry(users: User[], attempts: Attempt[], histories: Map<string, Event[]>) {
  const byId = new Map(users.map((u) => [u.userId, u]));
  await Promise.all(
    attempts.map(async (a) => {
      const h = histories.get(a.conv)!;
      const stored = h.find((e) => e.actorUserId === a.userId && e.clientMsgId === a.cmid);
      const { duplicate, event } = await byId.get(a.userId)!.chat.send(message(a.conv, a.cmid));
      if (stored) {
        expect([duplicate, event!.eventId, event!.seq]).toEqual([true, stored.eventId, stored.seq]);
      } else {
        expect([duplicate, event!.seq > h.length]).toEqual([false, true]);
      }
    }),
  );
}

/** Restarts on `dataDir` and checks what survived, then after every client retried. */
async function restart(
  env: Record<string, string>,
  dataDir: string,
  convs: string[],
  attempts: Attempt[],
  seenLive: Event[],
) {
  const after = await boot(env, dataDir);
  const reader = after.users[0]!;
  await retry(after.users, attempts, await verify(reader, convs, attempts, seenLive));
  return { ...after, histories: await verify(reader, convs, attempts) };
}

/** The server's log lines from its shutdown on. */
/** The server's warnings and errors, then everything from its shutdown on. */
const drainLog = (out: string) => {
  const at = out.indexOf('"shutting down"');
  const before = out
    .slice(0, Math.max(0, at))
    .split("\n")
    .filter((l) => /"level":(40|50|60)/.test(l));
  return [...before, out.slice(at).trim()].join("\n");
};

let keyspaces = 0;
let topics = 0;
const cassandraKeyspaces: string[] = [];
afterAll(async () => {
  for (const k of cassandraKeyspaces) await dropKeyspace(k);
});

/**
 * The server's environment for each backend: SQLite in the data dir, a fresh
 * Cassandra keyspace, or SQLite behind a fresh Pulsar topic.
 */
const backends: [string, () => Promise<Record<string, string>>][] = [
  ["SQLite", async () => ({})],
  [
    "Cassandra",
    async () => {
      const node = await ensureCassandra();
      const keyspace = `durability_${process.pid}_${++keyspaces}`;
      cassandraKeyspaces.push(keyspace);
      return {
        CHAT_CASSANDRA_CONTACT_POINTS: node.contactPoint,
        CHAT_CASSANDRA_LOCAL_DC: node.localDataCenter,
        CHAT_CASSANDRA_KEYSPACE: keyspace,
      };
    },
  ],
  [
    // Acknowledged once Pulsar holds them: the restarted process commits what its store had not.
    "SQLite, the log in Pulsar",
    async () => {
      const broker = await ensurePulsar();
      return {
        CHAT_PULSAR_URL: broker.webUrl,
        CHAT_PULSAR_TOPIC: `persistent://public/default/durability-${process.pid}-${++topics}`,
      };
    },
  ],
];

describe.each(backends)("process crash and shutdown, events in %s", (_name, backendEnv) => {
  it(
    "keeps every acknowledged send across a SIGKILL under load: same seq and event id, contiguous seqs, one event per retried send, exact resume from explicit and stored cursors",
    async () => {
      const env = await backendEnv();
      const { dataDir, server, ts, users, convs, from0, live } = await setup(env);
      const marker = await login(ts, "u0", "u0-stored");
      const markerLive = openSession(marker.chat, { cursors: from0 });
      await markerLive.frames.synced();

      const load = sendLoad(users.slice(0, 8), users.slice(8), convs, 500);
      // A second device marks what it receives as delivered, so it has stored cursors when
      // the kill comes; `asked` bounds a mark whose answer the kill cut off.
      const marked = new Map<string, bigint>();
      const asked = new Map<string, bigint>();
      const marking = (async () => {
        for (let seen = 0; !markerLive.frames.ended; seen = markerLive.frames.all.length) {
          await markerLive.frames.until((f) => f.ended || f.all.length > seen, 20_000, "events");
          for (const c of convs) {
            const top = markerLive.frames.events(c).at(-1)?.seq ?? 0n;
            if (top <= (asked.get(c) ?? 0n)) continue;
            asked.set(c, top);
            await marker.chat.markDelivered({ conversationId: c, seq: top }).then(
              () => marked.set(c, top),
              () => undefined,
            );
          }
        }
      })();
      await load.reached;
      const inFlight = load.inFlight();
      server.kill("SIGKILL");
      expect(await server.exit).toEqual({ code: null, signal: "SIGKILL" });
      await Promise.all([load.settled(), within(marking, 15_000, "the marking device")]);
      expect(inFlight).toBeGreaterThan(100);
      expect(marked.size).toBeGreaterThan(0);

      const after = await restart(env, dataDir, convs, load.attempts, live.frames.events());

      // The live device resumes after the last seq it saw without a hole, the other from its stored cursors.
      const lastSeen = new Map(convs.map((c) => [c, 0n]));
      for (const e of live.frames.events()) {
        if (e.seq === lastSeen.get(e.conversationId)! + 1n) lastSeen.set(e.conversationId, e.seq);
      }
      const at = convs.map((c) => cursor(c, lastSeen.get(c)!));
      const resumed = openSession((await login(after.ts, "u0", "u0-live")).chat, { cursors: at });
      const fromStore = openSession((await login(after.ts, "u0", "u0-stored")).chat, {
        cursors: [],
      });
      await Promise.all([resumed.frames.synced(), fromStore.frames.synced()]);
      // One more send per conversation: a stream that has it has everything before it.
      const fences = await Promise.all(
        convs.map((c) => after.users[1]!.chat.send(message(c, "fence"))),
      );
      expect(fences.map((f) => f.event!.seq)).toEqual(
        convs.map((c) => BigInt(after.histories.get(c)!.length + 1)),
      );
      const ids = fences.map((f) => f.event!.eventId);
      for (const { frames } of [resumed, fromStore]) {
        await frames.until(
          (f) => ids.every((id) => f.events().some((e) => e.eventId === id)),
          10_000,
          "fences",
        );
      }
      const final = await verify(after.users[0]!, convs, load.attempts);
      for (const c of convs) {
        const h = final.get(c)!.map((e) => e.seq);
        expect(resumed.frames.events(c).map((e) => e.seq)).toEqual(
          h.filter((s) => s > lastSeen.get(c)!),
        );
        const got = fromStore.frames.events(c).map((e) => e.seq);
        const from = got[0]! - 1n;
        expect(from, "stored cursor ≥ last acknowledged mark").toBeGreaterThanOrEqual(
          marked.get(c) ?? 0n,
        );
        expect(from, "stored cursor ≤ last requested mark").toBeLessThanOrEqual(asked.get(c) ?? 0n);
        expect(got).toEqual(h.filter((s) => s > from));
      }
    },
    slowMs,
  );

  it(
    "drains on SIGTERM under load: exits 0 by itself, ends every stream with UNAVAILABLE, loses no acknowledged send",
    async () => {
      const env = await backendEnv();
      const { dataDir, server, users, convs, from0, listener, live } = await setup(env);
      // Subscribe over Connect on HTTP/1.1, the browser path.
      const browser = openSubscribe(listener.via("connect"), from0);
      await browser.frames.synced();

      const load = sendLoad(users.slice(0, 8), users.slice(8), convs, 500);
      await load.reached;
      // Each pipelined Session has reached the server: on a loaded machine the
      // unary sends can reach the target while a Session's connection still
      // waits in the listen backlog, and closing the listener resets those.
      await Promise.all(
        load.streams.map(({ frames }) =>
          frames.until(
            (f) => f.ended || f.all.some((x) => x.frame.case === "sendAck"),
            20_000,
            "a first send ack on each Session",
          ),
        ),
      );
      const streams = { live, browser, ...Object.fromEntries(load.streams.map((s, i) => [i, s])) };
      // A stream that ended before the signal is a failure of its own, not of the drain.
      const endedEarly = Object.entries(streams)
        .filter(([, { frames }]) => frames.ended)
        .map(([which, { frames }]) => `${which}: ${frames.error?.message ?? "no error"}`);
      server.kill("SIGTERM");
      const exit = await within(server.exit, 10_000, "the server to exit after SIGTERM");
      expect(exit).toEqual({ code: 0, signal: null });
      await load.settled();
      expect(endedEarly, `ended before SIGTERM\n${drainLog(server.out)}`).toEqual([]);
      const wrong = Object.entries(streams)
        .filter(([, { frames }]) => frames.error?.code !== Code.Unavailable)
        .map(([which, { frames }]) => `${which}: ${frames.error?.message ?? "no error"}`);
      // The server's account of its drain says which connections it closed on, and why.
      expect(wrong, drainLog(server.out)).toEqual([]);

      await restart(env, dataDir, convs, load.attempts, live.frames.events());
    },
    slowMs,
  );
});
