import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { type EdgeMessage, EdgeMessageSchema } from "../../gen/chat/internal/v1/edge_pb.js";
import { RouterService } from "../../gen/chat/internal/v1/router_service_pb.js";
import {
  FindEventResponseSchema,
  StoreService,
} from "../../gen/chat/internal/v1/store_service_pb.js";
import { ConversationKind, type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";
import { createInProcessLog } from "../../lib/backends/memory/in-process-log.js";
import { createMemorySoftState } from "../../lib/backends/memory/memory-soft-state.js";
import { openSqliteStore } from "../../lib/backends/sqlite/sqlite-store.js";
import { toConfig } from "../../lib/config.js";
import { DuplicateEventError } from "../../lib/errors.js";
import { boundaryInterceptor } from "../../lib/interceptors.js";
import { createRootLogger } from "../../lib/logger.js";
import { createMetrics } from "../../lib/metrics.js";
import { createRouter } from "../../services/router/create.js";
import { createStore } from "../../services/store/create.js";

/**
 * Store and router wired as services/embedded.ts wires them (in-memory
 * Connect transports, SQLite, in-process log, in-memory soft state), without
 * the edge. `addRouter` starts another router replica on the same log, store
 * and soft state, as a second process would.
 */
async function startCore(opts: { laggingDedupReads?: boolean; logJudges?: boolean } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "chat-inmemory-"));
  const config = toConfig({ devMode: true, dataDir, logLevel: "silent" });
  const logger = createRootLogger("silent");
  const sqlite = openSqliteStore({ path: join(dataDir, "chat.db"), synchronous: "NORMAL" });
  const inProcess = createInProcessLog();
  // A log without verdicts (as a distributed log) makes the router look keys up first.
  const log = opts.logJudges === false ? { ...inProcess, judges: false } : inProcess;
  const soft = createMemorySoftState();
  // Verdicts the durability point handed out, so tests can tell a race really happened.
  const refused: Error[] = [];
  const hooks: { beforeCommit?: (batch: Event[]) => Promise<void> } = {};
  // Every event handed to the store, as the router built it.
  const committed: Event[] = [];
  const events = {
    ...sqlite,
    async commit(batch: Event[]) {
      await hooks.beforeCommit?.(batch);
      committed.push(...batch);
      const verdicts = await sqlite.commit(batch);
      for (const v of verdicts) if (v) refused.push(v);
      return verdicts;
    },
  };
  const metrics = createMetrics();
  const store = createStore({ config, log, events, metadata: sqlite, logger, metrics });
  const internal = { router: { interceptors: [boundaryInterceptor(logger)] } };
  const storeClient = createClient(StoreService, createRouterTransport(store.routes, internal));
  // A durable dedup lookup that lags (a stale replica) must still be caught
  // by the store's own check at commit.
  const routerStore = opts.laggingDedupReads
    ? { ...storeClient, findEvent: async () => create(FindEventResponseSchema) }
    : storeClient;
  const routers: ReturnType<typeof createRouter>[] = [];
  const addRouter = async () => {
    const router = createRouter({ config, log, store: routerStore, soft, logger, metrics });
    await router.start();
    routers.push(router);
    return createClient(RouterService, createRouterTransport(router.routes, internal));
  };
  await store.start();
  const router = await addRouter();
  return {
    soft,
    sqlite,
    refused,
    hooks,
    committed,
    store: storeClient,
    router,
    addRouter,
    async stop() {
      for (const r of routers) await r.stop();
      await store.stop();
      await soft.close();
      await sqlite.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

type Core = Awaited<ReturnType<typeof startCore>>;

let core: Core | undefined;
afterEach(async () => {
  await core?.stop();
  core = undefined;
});

const actor = (userId: string) => ({ userId, deviceId: `${userId}-phone` });

const post = (c: Core, userId: string, conversationId: string, clientMsgId: string, text = "") =>
  c.router.apply({
    actor: actor(userId),
    proposal: {
      conversationId,
      clientMsgId,
      kind: { case: "messagePosted", value: { content: { text: text || clientMsgId } } },
    },
  });

async function group(c: Core, owner: string, others: string[]) {
  const res = await c.router.openConversation({
    actor: actor(owner),
    kind: ConversationKind.GROUP,
    title: "g",
    memberUserIds: others,
  });
  expect(res.created).toBe(true);
  return res.conversationId;
}

/**
 * An edge "g_fake" where `userId`'s tablet is connected: the bus messages it
 * receives, and a wait (up to 5 s) until it holds `n` of them.
 */
async function fakeEdge(c: Core, userId: string) {
  await c.soft.registry.attach({ userId, deviceId: `${userId}-tab`, edgeId: "g_fake" });
  const got: EdgeMessage[] = [];
  const unsubscribe = await c.soft.bus.subscribe("g_fake", (m: EdgeMessage) => got.push(m));
  const until = async (n: number) => {
    const deadline = Date.now() + 5000;
    while (got.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  };
  return { got, until, unsubscribe };
}

/** Every stored event of the conversation, read through the StoreService. */
async function history(c: Core, viewer: string, conversationId: string) {
  const res = await c.store.readHistory({ viewerUserId: viewer, conversationId, limit: 1000 });
  return res.events;
}

const seqs = (events: Event[]) => events.map((e) => Number(e.seq));
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);
const textOf = (e: Event) => (e.kind.case === "messagePosted" ? e.kind.value.content?.text : "");

/** Checks the stored history is 1..n without holes and each text appears exactly once. */
async function expectGapless(c: Core, conversationId: string, texts: string[]) {
  const events = await history(c, "ann", conversationId);
  expect(seqs(events)).toEqual(range(1, events.length));
  const stored = events.slice(1).map(textOf);
  expect([...stored].sort()).toEqual([...texts].sort());
  return events;
}

/** Retries refused at commit: all of them, none, or (with verdicts) the first ones only. */
function expectRefusedAtCommit(refused: Error[], expected: number | "first", retries: number) {
  const n = refused.filter((e) => e instanceof DuplicateEventError).length;
  if (expected !== "first") expect(n).toBe(expected);
  else {
    expect(n).toBeGreaterThanOrEqual(1);
    expect(n).toBeLessThan(retries);
  }
}

describe("send path: sequencing", () => {
  it("gives concurrent applies on one conversation distinct, contiguous seqs", async () => {
    core = await startCore();
    const conv = await group(core, "ann", ["ben", "cat"]);
    const keys: [string, string][] = [];
    for (const u of ["ann", "ben", "cat"]) for (let i = 0; i < 20; i++) keys.push([u, `${u}-${i}`]);
    const results = await Promise.all(keys.map(([u, k]) => post(core!, u, conv, k)));
    expect(results.every((r) => r.duplicate === false)).toBe(true);
    expect(seqs(results.map((r) => r.event!)).sort((a, b) => a - b)).toEqual(range(2, 61));
    const events = await expectGapless(
      core,
      conv,
      keys.map(([, k]) => k),
    );
    // Each sender's own messages are stored in the order they were sent.
    for (const u of ["ann", "ben", "cat"]) {
      const mine = events
        .filter((e) => e.actorUserId === u && e.kind.case === "messagePosted")
        .map(textOf);
      expect(mine).toEqual(range(0, 19).map((i) => `${u}-${i}`));
    }
  });

  it("keeps conversations independent", async () => {
    core = await startCore();
    const a = await group(core, "ann", ["ben"]);
    const b = await group(core, "ann", ["ben"]);
    const results = await Promise.all(
      range(0, 19).map((i) => post(core!, "ann", i % 2 ? a : b, `m${i}`)),
    );
    const inA = results.filter((r) => r.event!.conversationId === a).map((r) => r.event!);
    const inB = results.filter((r) => r.event!.conversationId === b).map((r) => r.event!);
    expect(seqs(inA).sort((x, y) => x - y)).toEqual(range(2, 11));
    expect(seqs(inB).sort((x, y) => x - y)).toEqual(range(2, 11));
  });

  it("recovers when the sequencer loses its counter while appends are in flight", async () => {
    core = await startCore();
    const c = core;
    const conv = await group(c, "ann", ["ben"]);
    // A slow store, and the counter lost while some batches commit: the
    // durable head then lags the appends in flight behind those batches.
    let batches = 0;
    let resets = 0;
    let outstanding = 0;
    let outstandingAtReset = 0;
    c.hooks.beforeCommit = async () => {
      if (++batches % 2 === 0 && batches <= 6) {
        outstandingAtReset = Math.max(outstandingAtReset, outstanding);
        resets++;
        await c.soft.sequencer.reset(conv);
      }
      await new Promise((r) => setTimeout(r, 3));
    };
    const keys = range(0, 199).map((i) => `k${i}`);
    const sends: ReturnType<typeof post>[] = [];
    for (const [i, k] of keys.entries()) {
      outstanding++;
      const send = post(c, i % 2 ? "ann" : "ben", conv, k);
      void send.finally(() => outstanding--).catch(() => undefined);
      sends.push(send);
      // Waves, so that sequencing and committing overlap.
      if (i % 10 === 9) await new Promise((r) => setImmediate(r));
    }
    const results = await Promise.allSettled(sends);
    expect(resets).toBeGreaterThan(0);
    expect(outstandingAtReset).toBeGreaterThan(0);
    const failures = results.flatMap((r) =>
      r.status === "rejected" ? [ConnectError.from(r.reason).message] : [],
    );
    expect(failures).toEqual([]);
    const events = results.map(
      (r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof post>>>).value.event!,
    );
    expect(seqs(events).sort((a, b) => a - b)).toEqual(range(2, 201));
    await expectGapless(c, conv, keys);
    // And the next change continues right after the head.
    const next = await post(c, "ann", conv, "after");
    expect(next.event?.seq).toBe(202n);
  });
});

describe("send path: idempotency", () => {
  it("returns the original for a retry from the store, without a seq hole", async () => {
    core = await startCore();
    const conv = await group(core, "ann", ["ben"]);
    const first = await post(core, "ann", conv, "k1", "hello");
    expect(first.duplicate).toBe(false);
    expect(first.event?.seq).toBe(2n);

    const durable = await post(core, "ann", conv, "k1", "hello again");
    expect(durable.duplicate).toBe(true);
    expect(durable.event?.eventId).toBe(first.event?.eventId);
    expect(durable.event?.seq).toBe(2n);
    expect(textOf(durable.event!)).toBe("hello");

    // The seq the retry briefly held is not lost.
    const next = await post(core, "ann", conv, "k2");
    expect(next.event?.seq).toBe(3n);
    await expectGapless(core, conv, ["hello", "k2"]);
  });

  it.each([
    // The first retry is refused at commit; after it the conversation looks keys up first.
    { judges: true, lagging: false, refusedAtCommit: "first" as const },
    { judges: false, lagging: false, refusedAtCommit: 0 },
    { judges: false, lagging: true, refusedAtCommit: 5 },
  ])(
    "keeps the sequence gapless when late retries race new messages (log judges: $judges, lagging dedup reads: $lagging)",
    async ({ judges, lagging, refusedAtCommit }) => {
      core = await startCore({ logJudges: judges, laggingDedupReads: lagging });
      const c = core;
      const conv = await group(c, "ann", ["ben"]);
      const originals = await Promise.all(range(0, 4).map((i) => post(c, "ann", conv, `old${i}`)));
      const mixed = [
        ...range(0, 4).map((i) => post(c, "ann", conv, `old${i}`, "retried")),
        ...range(0, 14).map((i) => post(c, i % 2 ? "ann" : "ben", conv, `new${i}`)),
      ];
      const results = await Promise.all(mixed);
      for (const [i, r] of results.slice(0, 5).entries()) {
        expect(r.duplicate).toBe(true);
        expect(r.event?.eventId).toBe(originals[i]!.event?.eventId);
      }
      // A log with verdicts leaves retries to the store's check at commit
      // until one is refused there; without, the durable lookup answers them
      // before a seq is taken, and the check at commit catches only what a
      // lagging lookup missed.
      expectRefusedAtCommit(c.refused, refusedAtCommit, 5);
      const fresh = results.slice(5);
      expect(fresh.every((r) => !r.duplicate)).toBe(true);
      expect(seqs(fresh.map((r) => r.event!)).sort((a, b) => a - b)).toEqual(range(7, 21));
      await expectGapless(c, conv, [
        ...range(0, 4).map((i) => `old${i}`),
        ...range(0, 14).map((i) => `new${i}`),
      ]);
    },
  );

  it.each([
    { judges: true, lagging: false, refusedAtCommit: "first" as const },
    { judges: false, lagging: false, refusedAtCommit: 0 },
    { judges: false, lagging: true, refusedAtCommit: 20 },
  ])(
    "keeps every change of a busy conversation when late retries race it (log judges: $judges, lagging dedup reads: $lagging)",
    async ({ judges, lagging, refusedAtCommit }) => {
      core = await startCore({ logJudges: judges, laggingDedupReads: lagging });
      const c = core;
      const conv = await group(c, "ann", ["ben"]);
      const originals: Awaited<ReturnType<typeof post>>[] = [];
      for (let i = 0; i < 20; i++) originals.push(await post(c, "ann", conv, `old${i}`));
      // A slow store keeps many appends in flight behind each refused retry.
      c.hooks.beforeCommit = () => new Promise((r) => setTimeout(r, 3));
      const fresh: ReturnType<typeof post>[] = [];
      const retries: ReturnType<typeof post>[] = [];
      for (let i = 0; i < 200; i++) {
        fresh.push(post(c, i % 2 ? "ann" : "ben", conv, `new${i}`));
        if (i % 10 === 5) retries.push(post(c, "ann", conv, `old${Math.floor(i / 10)}`, "retried"));
        if (i % 10 === 9) await new Promise((r) => setImmediate(r));
      }
      const settled = await Promise.allSettled([...fresh, ...retries]);
      const failures = settled.flatMap((r) =>
        r.status === "rejected" ? [ConnectError.from(r.reason).message] : [],
      );
      expect(failures).toEqual([]);
      const retried = await Promise.all(retries);
      retried.forEach((r, i) => {
        expect(r.duplicate).toBe(true);
        expect(r.event?.eventId).toBe(originals[i]!.event?.eventId);
      });
      const added = await Promise.all(fresh);
      expect(seqs(added.map((r) => r.event!)).sort((a, b) => a - b)).toEqual(range(22, 221));
      expectRefusedAtCommit(c.refused, refusedAtCommit, 20);
      await expectGapless(c, conv, [
        ...range(0, 19).map((i) => `old${i}`),
        ...range(0, 199).map((i) => `new${i}`),
      ]);
    },
  );

  it("makes concurrent attempts with one key produce one event", async () => {
    core = await startCore();
    const conv = await group(core, "ann", ["ben"]);
    const results = await Promise.all(range(0, 9).map(() => post(core!, "ann", conv, "same")));
    const ids = new Set(results.map((r) => r.event?.eventId));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    await expectGapless(core, conv, ["same"]);
  });

  it("scopes keys per sender", async () => {
    core = await startCore();
    const conv = await group(core, "ann", ["ben"]);
    const a = await post(core, "ann", conv, "shared-key", "from ann");
    const b = await post(core, "ben", conv, "shared-key", "from ben");
    expect(b.duplicate).toBe(false);
    expect(b.event?.eventId).not.toBe(a.event?.eventId);
  });
});

describe("send path: fan-out", () => {
  it("publishes a conversation's committed events to a member's edge in seq order, each once", async () => {
    core = await startCore();
    const c = core;
    const conv = await group(c, "ann", ["ben"]);
    await c.soft.registry.attach({ userId: "ben", deviceId: "ben-tab", edgeId: "g_fake" });
    const delivered: { seq: number; eventId: string; deviceIds: string[] }[] = [];
    const unsubscribe = await c.soft.bus.subscribe("g_fake", (m: EdgeMessage) => {
      if (m.kind.case !== "delivery") return;
      const f = m.kind.value.frame?.frame;
      if (f?.case === "event" && f.value.conversationId === conv) {
        const { seq, eventId } = f.value;
        delivered.push({ seq: Number(seq), eventId, deviceIds: m.kind.value.deviceIds });
      }
    });
    const early = await post(c, "ann", conv, "early");
    // Pressure that makes appends fail mid-pipeline: a lost counter during the
    // first commits, and a retry refused at commit, racing new messages.
    let resets = 0;
    c.hooks.beforeCommit = async () => {
      if (resets++ < 3) await c.soft.sequencer.reset(conv);
    };
    const sends = [
      ...range(0, 14).map((i) => post(c, i % 2 ? "ann" : "ben", conv, `f${i}`)),
      post(c, "ann", conv, "early"),
      ...range(15, 29).map((i) => post(c, i % 2 ? "ann" : "ben", conv, `f${i}`)),
    ];
    const results = await Promise.all(sends);
    expect(results[15]?.event?.eventId).toBe(early.event?.eventId);
    expect(c.refused.length).toBeGreaterThan(0);

    const deadline = Date.now() + 5000;
    while (delivered.length < 31 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(delivered.map((d) => d.seq)).toEqual(range(2, 32));
    // What went out is what was stored: no refused attempt leaked under a taken seq.
    const stored = await history(c, "ben", conv);
    expect(delivered.map((d) => d.eventId)).toEqual(stored.slice(1).map((e) => e.eventId));
    expect(delivered.every((d) => d.deviceIds.join() === "ben-tab")).toBe(true);
    await unsubscribe();
  });

  it("builds the events and bus messages of a send with every field set, as decoding them does", async () => {
    core = await startCore();
    const c = core;
    const conv = await group(c, "ann", ["ben"]);
    const edge = await fakeEdge(c, "ben");
    await post(c, "ann", conv, "m1", "hello");
    await edge.until(1);
    await edge.unsubscribe();
    const m = edge.got[0];
    expect(m?.kind.case === "delivery" && m.kind.value.frame?.frame.case).toBe("event");
    // The router builds these as object literals (no create()): a field left
    // out would be missing here and present in the decoded copy.
    expect(m).toStrictEqual(fromBinary(EdgeMessageSchema, toBinary(EdgeMessageSchema, m!)));
    expect(c.committed.length).toBeGreaterThan(0);
    for (const ev of c.committed) {
      expect(ev).toStrictEqual(fromBinary(EventSchema, toBinary(EventSchema, ev)));
    }
  });

  it("sends nothing for a change that was refused", async () => {
    core = await startCore();
    const c = core;
    const conv = await group(c, "ann", ["ben"]);
    const { got, until } = await fakeEdge(c, "ann");
    const err = await post(c, "cat", conv, "intruder").catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.PermissionDenied);
    await post(c, "ann", conv, "legit");
    await until(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toHaveLength(1);
    const f = got[0]!.kind.case === "delivery" ? got[0]!.kind.value.frame?.frame : undefined;
    expect(f?.case === "event" ? textOf(f.value) : undefined).toBe("legit");
  });
});

describe("send path: OpenConversation", () => {
  it("opens one direct chat per pair under concurrent calls from both sides", async () => {
    core = await startCore();
    const calls = range(0, 19).map((i) =>
      core!.router.openConversation({
        actor: actor(i % 2 ? "ann" : "ben"),
        kind: ConversationKind.DIRECT,
        memberUserIds: [i % 2 ? "ben" : "ann"],
      }),
    );
    const results = await Promise.all(calls);
    expect(new Set(results.map((r) => r.conversationId)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    const id = results[0]!.conversationId;
    const membership = await core.store.loadMembership({ conversationId: id });
    expect(membership.headSeq).toBe(1n);
    expect(membership.members.map((m) => m.userId).sort()).toEqual(["ann", "ben"]);
  });

  it("opens one direct chat per pair when two router replicas race", async () => {
    core = await startCore();
    const c = core;
    const second = await c.addRouter();
    const routers = [c.router, second];
    const results = await Promise.all(
      range(0, 19).map((i) =>
        routers[i % 2]!.openConversation({
          actor: actor(i % 4 < 2 ? "ann" : "ben"),
          kind: ConversationKind.DIRECT,
          memberUserIds: [i % 4 < 2 ? "ben" : "ann"],
        }),
      ),
    );
    expect(new Set(results.map((r) => r.conversationId)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    const found = await c.store.findConversation({
      key: { case: "direct", value: { userA: "ben", userB: "ann" } },
    });
    expect(found.conversationId).toBe(results[0]!.conversationId);
  });

  it("opens one group per creator's request id, across router replicas", async () => {
    core = await startCore();
    const c = core;
    const second = await c.addRouter();
    const open = (r: typeof c.router, requestId: string) =>
      r.openConversation({
        actor: actor("ann"),
        kind: ConversationKind.GROUP,
        title: "team",
        memberUserIds: ["ben", "cat"],
        clientRequestId: requestId,
      });
    const results = await Promise.all(
      range(0, 9).map((i) => open(i % 2 ? c.router : second, "req-1")),
    );
    expect(new Set(results.map((r) => r.conversationId)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    // Another request id is another group; no request id always creates.
    const other = await open(c.router, "req-2");
    expect(other.created).toBe(true);
    expect(other.conversationId).not.toBe(results[0]!.conversationId);
    const [x, y] = await Promise.all([open(c.router, ""), open(second, "")]);
    expect(x.created && y.created).toBe(true);
    expect(x.conversationId).not.toBe(y.conversationId);
  });
});
