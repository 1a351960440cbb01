import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import { coresHeader, ownerOf } from "../../lib/core-shards.js";
import { createInternalTransport } from "../../lib/internal-http2.js";
import { direct, login, openSession, settle, type User } from "../helpers/clients.js";
import {
  dropKeys,
  dropKeyspace,
  ensureCassandra,
  ensurePulsar,
  ensureRedis,
  freePort,
  redisUrl,
} from "../helpers/dev-env.js";
import type { TestServer } from "../helpers/server.js";
import { ServerProcess } from "../helpers/server-process.js";

await ensureRedis();

const prefix = `split:${process.pid}:${randomBytes(4).toString("hex")}:`;
const secret = randomBytes(24).toString("base64url");
const dirs: string[] = [];
const processes: ServerProcess[] = [];
let corePort = 0;
let edgeA: TestServer;
let edgeB: TestServer;
let edgeBProcess: ServerProcess;

/** What every process of the deployment shares: Redis, the internal secret, the signing key. */
const shared = () => ({
  CHAT_REDIS_URL: redisUrl,
  CHAT_REDIS_KEY_PREFIX: prefix,
  CHAT_INTERNAL_SECRET: secret,
  CHAT_AUTH_SIGNING_KEYS: `k1:${Buffer.alloc(32, 9).toString("base64")}`,
  CHAT_METRICS_ENABLED: "false",
  // The ready line that says the port is at info.
  CHAT_LOG_LEVEL: "info",
  CHAT_SEND_PER_SECOND: "1000",
  CHAT_SEND_BURST: "1000",
});

async function start(
  env: Record<string, string>,
  dataDir = mkdtempSync(join(tmpdir(), "chat-split-")),
) {
  if (!dirs.includes(dataDir)) dirs.push(dataDir);
  const p = new ServerProcess({ ...shared(), CHAT_DATA_DIR: dataDir, ...env });
  processes.push(p);
  return { process: p, port: await p.ready() };
}

async function startEdge() {
  const { process: p, port } = await start({
    CHAT_ROLE: "edge",
    CHAT_HOST: "127.0.0.1",
    CHAT_PORT: "0",
    CHAT_CORE_URL: `http://127.0.0.1:${corePort}`,
    CHAT_DEV_MODE: "true",
    CHAT_CORE_PING_TIMEOUT_MS: "1000",
  });
  return { process: p, server: { url: `http://127.0.0.1:${port}` } as TestServer };
}

let coreDir: string;
let coreProcess: ServerProcess;
const startCore = async () => {
  const { process: p } = await start(
    { CHAT_ROLE: "core", CHAT_CORE_HOST: "127.0.0.1", CHAT_CORE_PORT: String(corePort) },
    coreDir,
  );
  coreProcess = p;
};

beforeAll(async () => {
  corePort = await freePort();
  coreDir = mkdtempSync(join(tmpdir(), "chat-split-core-"));
  await startCore();
  const [a, b] = await Promise.all([startEdge(), startEdge()]);
  edgeA = a.server;
  edgeB = b.server;
  edgeBProcess = b.process;
}, 60_000);

afterAll(async () => {
  for (const p of processes.splice(0)) {
    p.kill("SIGTERM");
    await p.exit;
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  await dropKeys(prefix);
});

/** Calls `call` until it is served, as a client retries: every failure meanwhile must be UNAVAILABLE. */
async function untilServed<T>(call: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await call();
    } catch (err) {
      expect(ConnectError.from(err).code).toBe(Code.Unavailable);
      if (i >= 50) throw err;
      await settle(100);
    }
  }
}

const seqsOf = (events: { seq: bigint }[]) => events.map((e) => Number(e.seq));
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe("split deployment: one core, two edge processes, soft state in Redis", () => {
  let ann: User;
  let ben: User;
  let id: string;

  it("delivers across edges exactly once and in order, with one sequence for sends on either edge", async () => {
    ann = await login(edgeA, "ann", "ann-phone");
    ben = await login(edgeB, "ben", "ben-phone");
    id = await direct(ann, ben);
    const annLive = openSession(ann.chat);
    const benLive = openSession(ben.chat);
    await Promise.all([annLive.frames.synced(), benLive.frames.synced()]);

    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      sends.push(
        ann.chat.send({ conversationId: id, clientMsgId: `a${i}`, content: { text: `a${i}` } }),
        ben.chat.send({ conversationId: id, clientMsgId: `b${i}`, content: { text: `b${i}` } }),
      );
    }
    await Promise.all(sends);
    for (const live of [annLive, benLive]) {
      await live.frames.until((f) => f.events(id).length >= 41, 10_000, "41 events");
    }
    await settle(300);
    expect(seqsOf(annLive.frames.events(id))).toEqual(range(1, 41));
    expect(seqsOf(benLive.frames.events(id))).toEqual(range(1, 41));

    // Presence crosses edges too: Ben heartbeats on B, Ann asks on A.
    benLive.send({ action: { case: "heartbeat", value: {} } });
    await expect
      .poll(async () => (await ann.chat.getPresence({ userIds: ["ben"] })).presences[0]?.online)
      .toBe(true);
    annLive.abort();
    benLive.abort();
  });

  it("loses nothing when an edge dies: its device resumes on the other edge from its stored cursor", async () => {
    await ben.chat.markDelivered({ conversationId: id, seq: 41n });
    edgeBProcess.kill("SIGKILL");
    await edgeBProcess.exit;
    for (let i = 0; i < 5; i++) {
      await ann.chat.send({ conversationId: id, clientMsgId: `c${i}`, content: { text: `c${i}` } });
    }
    // Ben's app reconnects through the proxy and lands on edge A, with his token.
    const benOnA = await login(edgeA, "ben", "ben-phone");
    const live = openSession(benOnA.chat);
    await live.frames.synced();
    await settle(200);
    expect(seqsOf(live.frames.events(id))).toEqual(range(42, 5));
    live.abort();
  });

  it("answers UNAVAILABLE while the core is away and goes on where it was once it is back", async () => {
    coreProcess.kill("SIGTERM");
    expect((await coreProcess.exit).code).toBe(0);
    const send = () =>
      ann.chat.send({ conversationId: id, clientMsgId: "d0", content: { text: "d0" } });
    await expect(send()).rejects.toMatchObject({ code: Code.Unavailable });
    // Reads need the core too; the edge says so rather than hang.
    await expect(ann.chat.getHistory({ conversationId: id })).rejects.toMatchObject({
      code: Code.Unavailable,
    });
    await startCore();
    const seq = (await untilServed(send)).event!.seq;
    expect(seq).toBe(47n);
    const history = await ann.chat.getHistory({ conversationId: id, limit: 100 });
    expect(seqsOf(history.events)).toEqual(range(1, 47));
  });

  it("answers UNAVAILABLE while the core is frozen with its sockets open, and goes on once it runs again", async () => {
    const send = (timeoutMs?: number) =>
      ann.chat.send(
        { conversationId: id, clientMsgId: "z0", content: { text: "z0" } },
        timeoutMs ? { timeoutMs } : {},
      );
    coreProcess.kill("SIGSTOP");
    try {
      // The edge drops the connection once its ping goes unanswered (1 s here);
      // without that the call would wait for TCP to give up, long past this deadline.
      await expect(send(15_000)).rejects.toMatchObject({ code: Code.Unavailable });
    } finally {
      coreProcess.kill("SIGCONT");
    }
    const seq = (await untilServed(send)).event!.seq;
    const history = await ann.chat.getHistory({ conversationId: id, limit: 100 });
    const z0 = history.events.filter((e) => e.clientMsgId === "z0");
    expect(z0.map((e) => e.seq)).toEqual([seq]);
    expect(seqsOf(history.events)).toEqual(range(1, history.events.length));
  });

  it("refuses internal calls that lack the internal secret, and carries the core's error codes", async () => {
    const store = (key: string) =>
      createClient(
        StoreService,
        createInternalTransport({ url: `http://127.0.0.1:${corePort}`, secret: key }),
      );
    const err = await store("not-the-secret")
      .loadUsers({ userIds: ["ann"] })
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toMatchObject({ code: Code.Unauthenticated });
    const ok = await store(secret).loadUsers({ userIds: ["ann"] });
    expect(ok.users.map((u) => u.userId)).toEqual(["ann"]);
    // An address where something else answers (here an edge's public port) is not the core.
    const elsewhere = createClient(
      StoreService,
      createInternalTransport({ url: edgeA.url, secret }),
    );
    await expect(elsewhere.loadUsers({ userIds: ["ann"] })).rejects.toMatchObject({
      code: Code.Unavailable,
    });
    // Edges that spread conversations over several cores need them to share a store.
    const sharded = createClient(
      StoreService,
      createInternalTransport({
        url: `http://127.0.0.1:${corePort}`,
        secret,
        headers: { [coresHeader]: "2" },
      }),
    );
    await expect(sharded.loadUsers({ userIds: ["ann"] })).rejects.toMatchObject({
      code: Code.FailedPrecondition,
    });
    // A domain error crosses the hop with its code, to the edge and on to the client.
    await expect(
      ann.chat.getHistory({ conversationId: "c_0123456789abcdefghjkmnpqrs" }),
    ).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("drains on SIGTERM: an edge, then the core, each exits 0", async () => {
    const edge = processes[1]!;
    edge.kill("SIGTERM");
    expect((await edge.exit).code).toBe(0);
    coreProcess.kill("SIGTERM");
    expect((await coreProcess.exit).code).toBe(0);
  });
});

/**
 * Each core's message log: in process (acknowledged once Cassandra holds the event), or a
 * Pulsar topic of the core's own (acknowledged once the broker does; the core's store then
 * commits it to Cassandra). A core started in another's place takes its topic.
 */
const logs: [string, (() => Promise<(k: number) => Record<string, string>>) | undefined][] = [
  ["in process", undefined],
  [
    "in Pulsar",
    async () => {
      const { webUrl } = await ensurePulsar();
      return (k) => ({
        CHAT_PULSAR_URL: webUrl,
        CHAT_PULSAR_TOPIC: `persistent://public/default/split-${process.pid}-${k}`,
      });
    },
  ],
];

describe.each(logs)(
  "split deployment with the store in Cassandra, the log %s: two cores share the conversations, and keep nothing of their own",
  (_, logEnv) => {
    const tag = logEnv ? "pulsar" : "local";
    const keyspace = `split_${process.pid}_${tag}`;
    const redisPrefix = `${prefix}cassandra-${tag}:`;
    let logOf: (k: number) => Record<string, string> = () => ({});
    const own: ServerProcess[] = [];
    const corePorts: number[] = [];
    const coreProcesses: ServerProcess[] = [];
    const edges: TestServer[] = [];
    let contactPoint = "";

    const startCassandraCore = async (k: number) => {
      const { process: p } = await start({
        CHAT_ROLE: "core",
        CHAT_CORE_HOST: "127.0.0.1",
        CHAT_CORE_PORT: String(corePorts[k]),
        CHAT_CASSANDRA_CONTACT_POINTS: contactPoint,
        CHAT_CASSANDRA_KEYSPACE: keyspace,
        CHAT_REDIS_KEY_PREFIX: redisPrefix,
        ...logOf(k),
      });
      own.push(p);
      coreProcesses[k] = p;
    };

    beforeAll(async () => {
      contactPoint = (await ensureCassandra()).contactPoint;
      if (logEnv) logOf = await logEnv();
      corePorts.push(await freePort(), await freePort());
      // The first core creates the keyspace; the second finds it.
      await startCassandraCore(0);
      await startCassandraCore(1);
      for (let e = 0; e < 2; e++) {
        const { process: p, port } = await start({
          CHAT_ROLE: "edge",
          CHAT_HOST: "127.0.0.1",
          CHAT_PORT: "0",
          CHAT_CORE_URL: corePorts.map((c) => `http://127.0.0.1:${c}`).join(","),
          CHAT_DEV_MODE: "true",
          CHAT_REDIS_KEY_PREFIX: redisPrefix,
        });
        own.push(p);
        edges.push({ url: `http://127.0.0.1:${port}` } as TestServer);
      }
    }, 120_000);

    afterAll(async () => {
      for (const p of own.splice(0).reverse()) {
        p.kill("SIGTERM");
        await p.exit;
      }
      await dropKeyspace(keyspace);
      await dropKeys(redisPrefix);
    });

    const ownerOfConv = (conv: string) => ownerOf(`c ${conv}`, 2);
    /** Retries while the answer is UNAVAILABLE (a core just started), for up to 5 s. */
    const untilAvailable = async <T>(call: () => Promise<T>): Promise<T> => {
      for (let i = 0; ; i++) {
        try {
          return await call();
        } catch (err) {
          if (i >= 50 || ConnectError.from(err).code !== Code.Unavailable) throw err;
          await settle(100);
        }
      }
    };
    /** Direct conversations of cat (on edge 0) with others (on edge 1), until both cores own one. */
    let cat: User;
    const peers: User[] = [];
    const convs: string[] = [];
    const send = (conv: string, key: string) =>
      cat.chat.send({ conversationId: conv, clientMsgId: key, content: { text: key } });

    it("sends every conversation's changes through the core that owns it: exactly once and in order across edges, on both cores", async () => {
      cat = await login(edges[0]!, "cat", "cat-phone");
      for (let i = 0; i < 12 && new Set(convs.map(ownerOfConv)).size < 2; i++) {
        const peer = await login(edges[1]!, `peer${i}`, `peer${i}-phone`);
        peers.push(peer);
        convs.push(await direct(cat, peer));
      }
      expect(new Set(convs.map(ownerOfConv)).size).toBe(2);
      const catLive = openSession(cat.chat);
      const peerLives = peers.map((p) => openSession(p.chat));
      await Promise.all([catLive, ...peerLives].map((l) => l.frames.synced()));
      // Both sides send at once, from both edges, in every conversation.
      await Promise.all(
        convs.flatMap((conv, k) =>
          Array.from({ length: 10 }, (_, i) => [
            send(conv, `c${i}`),
            peers[k]!.chat.send({
              conversationId: conv,
              clientMsgId: `p${i}`,
              content: { text: "p" },
            }),
          ]).flat(),
        ),
      );
      for (const [k, conv] of convs.entries()) {
        for (const live of [catLive, peerLives[k]!]) {
          await live.frames.until((f) => f.events(conv).length >= 21, 10_000, "21 events");
        }
      }
      await settle(300);
      for (const [k, conv] of convs.entries()) {
        expect(seqsOf(catLive.frames.events(conv))).toEqual(range(1, 21));
        expect(seqsOf(peerLives[k]!.frames.events(conv))).toEqual(range(1, 21));
      }
      for (const l of [catLive, ...peerLives]) l.abort();
    });

    it("loses only its own conversations while a core is away, and a new core in a new data directory goes on where the old one stopped", async () => {
      const gone = 1;
      const kept = convs.filter((c) => ownerOfConv(c) !== gone);
      const moved = convs.filter((c) => ownerOfConv(c) === gone);
      const last = await Promise.all(moved.map((c) => send(c, "last")));
      coreProcesses[gone]!.kill("SIGKILL");
      await coreProcesses[gone]!.exit;
      // The other core's conversations go on; the gone core's answer UNAVAILABLE.
      for (const c of kept) expect((await send(c, "while-away")).event!.seq).toBe(22n);
      for (const c of moved) {
        await expect(send(c, "while-away")).rejects.toMatchObject({ code: Code.Unavailable });
      }
      // A new machine: nothing of the old core's directory, the same keyspace and Redis.
      await startCassandraCore(gone);
      for (const [k, c] of moved.entries()) {
        const retried = await untilAvailable(() => send(c, "last"));
        expect(retried).toMatchObject({
          duplicate: true,
          event: { eventId: last[k]!.event!.eventId },
        });
        expect((await send(c, "after")).event!.seq).toBe(23n);
        const history = await cat.chat.getHistory({ conversationId: c, limit: 100 });
        expect(seqsOf(history.events)).toEqual(range(1, 23));
      }
      const { conversations } = await cat.chat.listConversations({});
      const heads = new Map(conversations.map((c) => [c.conversationId, c.headSeq]));
      expect(convs.map((c) => heads.get(c))).toEqual(
        convs.map((c) => (ownerOfConv(c) === gone ? 23n : 22n)),
      );
    });

    it("opens one direct conversation for a pair whose users open it at once, from either edge", async () => {
      const pairs = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          Promise.all([
            login(edges[0]!, `dora${i}`, `dora${i}-phone`),
            login(edges[1]!, `eli${i}`, `eli${i}-phone`),
          ]),
        ),
      );
      await Promise.all(
        pairs.map(async ([dora, eli]) => {
          const [mine, theirs] = await Promise.all([direct(dora, eli), direct(eli, dora)]);
          expect(theirs).toBe(mine);
          const hi = { conversationId: mine, clientMsgId: "hi", content: { text: "hi" } };
          expect((await dora.chat.send(hi)).event!.seq).toBe(2n);
        }),
      );
    });
  },
);
