import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ChatService,
  type SendResponse,
  SubscribeRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import {
  cursor,
  direct,
  group,
  login,
  openSession,
  openSubscribe,
  type Protocol,
  seqs,
  settle,
  synced,
  transport,
  type User,
} from "../helpers/clients.js";
import { connectH2, rawCall } from "../helpers/raw-grpc.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await server?.destroy();
  server = undefined;
});

const text = (t: string) => ({ text: t });

/**
 * Gives `member` 30 groups with an 8 KB message each, so that a sync to a
 * reader with a tiny receive window waits for it; returns the last group.
 */
async function largeBacklog(owner: User, member: User): Promise<string> {
  let id = "";
  for (let i = 0; i < 30; i++) {
    id = await group(owner, [member], `b${i}`);
    await owner.chat.send({
      conversationId: id,
      clientMsgId: "big",
      content: text("m".repeat(8000)),
    });
  }
  return id;
}

/** A connection whose 1 KB receive window fills after a frame or two. */
async function tinyWindow(s: TestServer) {
  const h2 = await connectH2(s.url, { initialWindowSize: 1024 });
  cleanups.push(() => h2.destroy());
  return h2;
}

describe("ordering", () => {
  it("gives each conversation strictly increasing seqs without holes, under concurrent senders", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const group = await a!.chat.createGroupConversation({
      title: "g",
      memberUserIds: [b!.userId, c!.userId],
    });
    const id = group.conversation!.conversationId;
    const sends = [a, b, c].flatMap((u, i) =>
      Array.from({ length: 15 }, (_, j) =>
        u!.chat.send({
          conversationId: id,
          clientMsgId: `m-${i}-${j}`,
          content: text(`${i}/${j}`),
        }),
      ),
    );
    const results = await Promise.all(sends);
    const got = results.map((r) => Number(r.event!.seq)).sort((x, y) => x - y);
    // seq 1 is the creation event; 45 messages follow without holes or reuse.
    expect(got).toEqual(Array.from({ length: 45 }, (_, i) => i + 2));
    const history = await a!.chat.getHistory({ conversationId: id, limit: 100 });
    expect(seqs(history.events)).toEqual(Array.from({ length: 46 }, (_, i) => i + 1));
  });

  it("delivers a sender's pipelined messages to a live device in seq order and in send order", async () => {
    server = await startServer({ limits: { sendBurst: 100 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const bob = openSession(b.chat);
    await bob.frames.synced();
    const ann = openSession(a.chat, { subscribe: false });
    for (let i = 0; i < 50; i++) {
      ann.send({
        frameId: `f${i}`,
        action: {
          case: "send",
          value: { conversationId: id, clientMsgId: `c${i}`, content: text(`n${i}`) },
        },
      });
    }
    await bob.frames.until((f) => f.events(id).length >= 51, 10_000, "51 events");
    const got = bob.frames.events(id).filter((e) => e.seq > 1n);
    expect(seqs(got)).toEqual(Array.from({ length: 50 }, (_, i) => i + 2));
    expect(
      got.map((e) => (e.kind.case === "messagePosted" ? e.kind.value.content?.text : "")),
    ).toEqual(Array.from({ length: 50 }, (_, i) => `n${i}`));
    bob.abort();
    ann.abort();
  });
});

describe("idempotent send", () => {
  it("maps a retried client_msg_id to the original event, also after a restart", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const first = await a.chat.send({
      conversationId: id,
      clientMsgId: "k1",
      content: text("hello"),
    });
    expect(first.duplicate).toBe(false);
    const retry = await a.chat.send({
      conversationId: id,
      clientMsgId: "k1",
      content: text("hello"),
    });
    expect(retry.duplicate).toBe(true);
    expect(retry.event!.eventId).toBe(first.event!.eventId);
    expect(retry.event!.seq).toBe(first.event!.seq);

    // A restart loses every in-memory cache; the store still knows the key.
    server = await server.restart();
    const a2 = await login(server, "ann");
    const after = await a2.chat.send({
      conversationId: id,
      clientMsgId: "k1",
      content: text("hello"),
    });
    expect(after.duplicate).toBe(true);
    expect(after.event!.eventId).toBe(first.event!.eventId);
    const next = await a2.chat.send({
      conversationId: id,
      clientMsgId: "k2",
      content: text("next"),
    });
    expect(next.event!.seq).toBe(first.event!.seq + 1n);
    const history = await a2.chat.getHistory({ conversationId: id });
    expect(history.events.filter((e) => e.clientMsgId === "k1")).toHaveLength(1);
  });

  it("keeps concurrent retries of one key to a single event", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        a.chat.send({ conversationId: id, clientMsgId: "same", content: text("x") }),
      ),
    );
    expect(new Set(results.map((r) => r.event!.eventId)).size).toBe(1);
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    const history = await a.chat.getHistory({ conversationId: id });
    expect(seqs(history.events)).toEqual([1, 2]);
  });

  it("scopes keys per sender: two senders may use the same client_msg_id", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const x = await a.chat.send({
      conversationId: id,
      clientMsgId: "shared",
      content: text("from a"),
    });
    const y = await b.chat.send({
      conversationId: id,
      clientMsgId: "shared",
      content: text("from b"),
    });
    expect(y.duplicate).toBe(false);
    expect(y.event!.seq).toBe(x.event!.seq + 1n);
  });

  it("serves a storm of resent outboxes and new sends into one conversation at once, failing none", async () => {
    // As after an outage: every client resends what it never saw acked.
    server = await startServer({
      limits: { sendPerSecond: 10_000, sendBurst: 10_000, requestsPerSecond: 10_000 },
    });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await group(a, [b]);
    const stored: SendResponse[] = [];
    for (let i = 0; i < 150; i++) {
      stored.push(
        await a.chat.send({ conversationId: id, clientMsgId: `k${i}`, content: text("x") }),
      );
    }
    const [retries, fresh] = await Promise.all([
      Promise.all(
        stored.map((_, i) =>
          a.chat.send({ conversationId: id, clientMsgId: `k${i}`, content: text("x") }),
        ),
      ),
      Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          b.chat.send({ conversationId: id, clientMsgId: `n${i}`, content: text("y") }),
        ),
      ),
    ]);
    expect(retries.every((r, i) => r.duplicate && r.event!.seq === stored[i]!.event!.seq)).toBe(
      true,
    );
    expect(fresh.map((r) => Number(r.event!.seq)).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 30 }, (_, i) => 152 + i),
    );
    const { events } = await a.chat.getHistory({ conversationId: id, limit: 500 });
    expect(seqs(events)).toEqual(Array.from({ length: 181 }, (_, i) => i + 1));
  });

  it("returns the original event to a retry that authorization alone would now refuse", async () => {
    // A retry is judged again before the store can recognise its key; a
    // refusal must still hand back what the first attempt did.
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [b!, c!]);
    const posted = await a!.chat.send({
      conversationId: id,
      clientMsgId: "m1",
      content: text("hi"),
    });
    const target = posted.event!.seq;
    const edited = await a!.chat.editMessage({
      conversationId: id,
      targetSeq: target,
      text: "hello",
      clientMsgId: "ed-1",
    });
    const deleted = await a!.chat.deleteMessage({
      conversationId: id,
      targetSeq: target,
      clientMsgId: "del-1",
    });
    const left = await b!.chat.send({
      conversationId: id,
      clientMsgId: "b1",
      content: text("bye"),
    });
    await b!.chat.leaveConversation({ conversationId: id });

    // The delete's retry finds its target deleted, the edit's finds it gone,
    // and ben is no longer a member.
    const retries = await Promise.all([
      a!.chat.deleteMessage({ conversationId: id, targetSeq: target, clientMsgId: "del-1" }),
      a!.chat.editMessage({
        conversationId: id,
        targetSeq: target,
        text: "hello",
        clientMsgId: "ed-1",
      }),
      b!.chat.send({ conversationId: id, clientMsgId: "b1", content: text("bye") }),
    ]);
    expect(retries.map((r) => r.event?.eventId)).toEqual([
      deleted.event!.eventId,
      edited.event!.eventId,
      left.event!.eventId,
    ]);
    expect(retries[2].duplicate).toBe(true);
    // Without a key, or under a new one, the refusal stands and nothing is stored.
    await expect(
      a!.chat.deleteMessage({ conversationId: id, targetSeq: target, clientMsgId: "del-2" }),
    ).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await expect(
      b!.chat.send({ conversationId: id, clientMsgId: "b2", content: text("again") }),
    ).rejects.toMatchObject({ code: Code.PermissionDenied });
    const history = await a!.chat.getHistory({ conversationId: id, limit: 50 });
    expect(seqs(history.events)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

describe("durable ack", () => {
  it("acknowledges only what survives a restart", async () => {
    server = await startServer({ sqlite: { synchronous: "FULL" } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const acked = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        a.chat.send({ conversationId: id, clientMsgId: `d${i}`, content: text(`d${i}`) }),
      ),
    );
    // Stop immediately after the acks: nothing acknowledged may be missing.
    server = await server.restart();
    const b2 = await login(server, "ben");
    const history = await b2.chat.getHistory({ conversationId: id, limit: 100 });
    const stored = new Set(history.events.map((e) => e.eventId));
    for (const r of acked) expect(stored.has(r.event!.eventId)).toBe(true);
  });

  it("acks a send made while its stream still syncs once, with no second copy as an event", async () => {
    server = await startServer({ limits: { outboxMaxFrames: 16, lagTimeoutMs: 60_000 } });
    const [a, s] = await Promise.all([login(server, "ann"), login(server, "sid")]);
    const id = await largeBacklog(a, s);
    const call = rawCall(await tinyWindow(server), "/chat.v1.ChatService/Session", s.token);
    call.stream.pause();
    call.send({ action: { case: "subscribe", value: { cursors: [] } } });
    await settle(300);
    call.send({
      frameId: "f1",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "s1", content: text("hi") },
      },
    });
    // Past the 3 s after which a durable send is acked without its fan-out.
    await settle(4500);
    expect(call.frames.of("syncComplete")).toHaveLength(0);
    call.stream.resume();
    await call.frames.synced(10_000);
    await call.frames.until((f) => f.of("sendAck").length > 0);
    await settle(300);
    expect(call.frames.events(id).filter((e) => e.clientMsgId === "s1")).toHaveLength(1);
    expect(call.frames.all.find((f) => f.frame.case === "sendAck")?.replyToFrameId).toBe("f1");
    call.end();
  }, 30_000);
});

describe.each<Protocol>(["grpc", "connect", "grpc-web"])("delivery over %s", (protocol) => {
  it("reaches every online device of every member exactly once, the sender's other devices included", async () => {
    server = await startServer();
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-laptop");
    const b1 = await login(server, "ben", "ben-phone");
    const b2 = await login(server, "ben", "ben-web");
    const id = await direct(a1, b1);
    // Native devices use Session; the web device uses Subscribe (server stream).
    const streams = {
      sender: openSession(a1.chat),
      senderOther: openSession(a2.chat),
      peer: openSession(b1.chat),
      peerWeb: openSubscribe(b2.via(protocol)),
    };
    for (const s of Object.values(streams)) {
      await s.frames.synced();
    }
    for (let i = 0; i < 5; i++) {
      streams.sender.send({
        frameId: `f${i}`,
        action: {
          case: "send",
          value: { conversationId: id, clientMsgId: `x${i}`, content: text(`x${i}`) },
        },
      });
    }
    // Seq 1 (the creation) arrives by sync: these devices had no cursor.
    const expected = [1, 2, 3, 4, 5, 6];
    for (const [name, s] of Object.entries(streams)) {
      await s.frames.until((f) => f.events(id).length >= 6, 5000, `${name} events`);
    }
    await settle(300);
    for (const s of Object.values(streams)) expect(seqs(s.frames.events(id))).toEqual(expected);
    // The sending stream gets acks in place of events, each answering its frame.
    const acks = streams.sender.frames.of("sendAck");
    expect(acks.map((a) => Number(a.event!.seq))).toEqual([2, 3, 4, 5, 6]);
    expect(streams.sender.frames.of("event")).toHaveLength(0);
    const replyIds = streams.sender.frames.all
      .filter((f) => f.frame.case === "sendAck")
      .map((f) => f.replyToFrameId);
    expect(replyIds).toEqual(["f0", "f1", "f2", "f3", "f4"]);
    for (const s of Object.values(streams)) s.abort();
  });
});

describe("resume", () => {
  it("gives a device that was offline everything after its cursor, and nothing twice", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const first = openSession(b.chat);
    await first.frames.synced();
    await a.chat.send({ conversationId: id, clientMsgId: "1", content: text("one") });
    await first.frames.until((f) => f.events(id).some((e) => e.seq === 2n));
    const held = first.frames.events(id).at(-1)!.seq;
    first.abort();
    await first.frames.untilEnded();

    for (let i = 0; i < 7; i++) {
      await a.chat.send({ conversationId: id, clientMsgId: `off${i}`, content: text(`off${i}`) });
    }
    const back = openSession(b.chat, { cursors: [cursor(id, held)] });
    await back.frames.synced();
    await a.chat.send({ conversationId: id, clientMsgId: "live", content: text("live") });
    await back.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "live"));
    await settle();
    expect(seqs(back.frames.events(id))).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
    const sync = back.frames.of("sync")[0]!;
    expect(sync.gap).toBe(false);
    expect(sync.gapAfterSeq).toBe(2n);
    back.abort();
  });

  it("resumes from the device's stored delivered cursor when the client sends none", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    await a.chat.send({ conversationId: id, clientMsgId: "1", content: text("one") });
    await b.chat.markDelivered({ conversationId: id, seq: 2n });
    await a.chat.send({ conversationId: id, clientMsgId: "2", content: text("two") });
    const s = openSubscribe(b.chat);
    await s.frames.synced();
    expect(seqs(s.frames.events(id))).toEqual([3]);
    s.abort();
  });

  it("still brings what others posted before a device's own send, resuming from its stored cursor", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann", "a1"), login(server, "ben")]);
    const id = await direct(a, b);
    const first = openSubscribe(a.chat);
    await first.frames.synced();
    await a.chat.markDelivered({ conversationId: id, seq: 1n });
    first.abort();
    // Offline, ben writes; ann's device answers without syncing (a quick
    // reply from a notification). It holds seq 1 and its own seq 3, not 2.
    await b.chat.send({ conversationId: id, clientMsgId: "b1", content: text("from ben") });
    await a.chat.send({ conversationId: id, clientMsgId: "a1", content: text("reply") });
    for (const open of [() => openSubscribe(a.chat), () => openSession(a.chat)]) {
      const again = open();
      await again.frames.synced();
      expect(seqs(again.frames.events(id))).toEqual([2, 3]);
      again.abort();
    }
  });

  it("resumes after a server restart without loss or duplicates", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const s = openSession(b.chat);
    await s.frames.synced();
    await a.chat.send({ conversationId: id, clientMsgId: "1", content: text("one") });
    await s.frames.until(
      (f) => f.events(id).length === 2 || f.events(id).some((e) => e.seq === 2n),
    );
    const held = s.frames.events(id).at(-1)!.seq;

    server = await server.restart();
    await s.frames.untilEnded();
    const a2 = await login(server, "ann");
    const b2 = await login(server, "ben");
    await a2.chat.send({ conversationId: id, clientMsgId: "2", content: text("two") });
    await a2.chat.send({ conversationId: id, clientMsgId: "3", content: text("three") });
    const back = openSession(b2.chat, { cursors: [cursor(id, held)] });
    await back.frames.synced();
    await settle();
    expect(seqs(back.frames.events(id))).toEqual([3, 4]);
    back.abort();
  });

  it("marks a gap when more was missed than a batch carries, and history fills it", async () => {
    server = await startServer({ session: { syncLimit: 5 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    for (let i = 0; i < 12; i++) {
      await a.chat.send({ conversationId: id, clientMsgId: `g${i}`, content: text(`g${i}`) });
    }
    const s = openSubscribe(b.chat, [cursor(id, 1n)]);
    await s.frames.synced();
    const batch = s.frames.of("sync")[0]!;
    expect(batch.gap).toBe(true);
    expect(seqs(batch.events)).toEqual([9, 10, 11, 12, 13]);
    const fill = await b.chat.getHistory({
      conversationId: id,
      anchorSeq: batch.gapAfterSeq,
      direction: 1,
      limit: Number(batch.events[0]!.seq - batch.gapAfterSeq - 1n),
    });
    expect(seqs(fill.events)).toEqual([2, 3, 4, 5, 6, 7, 8]);
    s.abort();
  });

  it("gives each reconnect made while others post exactly what follows its cursors, once and in order", async () => {
    server = await startServer({
      limits: {
        sendPerSecond: 10_000,
        sendBurst: 10_000,
        requestsPerSecond: 10_000,
        requestBurst: 10_000,
      },
    });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    let stop = false;
    const post = async (id: string) => {
      for (let i = 0; !stop; i++) {
        await a.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: text("m") });
      }
    };
    const first = await group(a, [b]);
    const held = new Map([[first, 0n]]);
    const writers = [post(first)];
    for (let round = 0; round < 6; round++) {
      const cursors = [...held].filter(([, seq]) => seq > 0n).map(([id, seq]) => cursor(id, seq));
      const st = round % 2 ? openSubscribe(b.chat, cursors) : openSession(b.chat, { cursors });
      // A group created while the stream syncs: ben holds no cursor for it.
      if (round === 2) {
        const fresh = await group(a, [b], "fresh");
        held.set(fresh, 0n);
        writers.push(post(fresh));
      }
      await st.frames.synced(10_000);
      await settle(200);
      st.abort();
      await settle(30);
      for (const [id, after] of held) {
        const got = st.frames.events(id).map((e) => e.seq);
        // Contiguous from the cursor on, unless a sync batch marked a gap before its events.
        const gap = st.frames.of("sync").some((x) => x.conversationId === id && x.gap);
        const from = gap && got.length > 0 ? got[0]! : after + 1n;
        expect(got, `round ${round}`).toEqual(got.map((_, i) => from + BigInt(i)));
        if (got.length > 0) held.set(id, got.at(-1)!);
      }
    }
    stop = true;
    await Promise.all(writers);
    expect([...held.values()].every((seq) => seq > 1n)).toBe(true);
  }, 30_000);

  it("delivers every live event of a long sync, more than a stream buffers, once and in order", async () => {
    server = await startServer({
      limits: {
        outboxMaxFrames: 16,
        sendPerSecond: 100_000,
        sendBurst: 100_000,
        requestsPerSecond: 100_000,
        requestBurst: 100_000,
        lagTimeoutMs: 120_000,
      },
    });
    const [a, s] = await Promise.all([login(server, "ann"), login(server, "sid")]);
    await largeBacklog(a, s);
    const busy = await group(a, [s], "busy");
    const slow = rawCall(
      await tinyWindow(server),
      "/chat.v1.ChatService/Subscribe",
      s.token,
      toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema)),
    );
    slow.stream.pause();
    await settle(500);

    // While the sync waits: a new group (its seq 1 buffered), then more events
    // than the stream buffers (4096), then the new group's seq 2.
    const fresh = await group(a, [s], "fresh");
    const total = 4200;
    for (let i = 0; i < total; i += 300) {
      await Promise.all(
        Array.from({ length: 300 }, (_, j) =>
          a.chat.send({ conversationId: busy, clientMsgId: `x${i + j}`, content: text("x") }),
        ),
      );
    }
    await a.chat.send({ conversationId: fresh, clientMsgId: "f2", content: text("second") });
    expect(slow.frames.of("syncComplete")).toHaveLength(0);

    slow.stream.resume();
    await slow.frames.until((f) => f.events(busy).length >= total + 1, 30_000, "busy events");
    await slow.frames.until((f) => f.events(fresh).length >= 2, 5000, "fresh events");
    await settle(300);
    expect(slow.frames.error).toBeUndefined();
    expect(seqs(slow.frames.events(busy))).toEqual(
      Array.from({ length: total + 1 }, (_, i) => i + 1),
    );
    expect(seqs(slow.frames.events(fresh))).toEqual([1, 2]);
    expect(slow.frames.of("sync").some((b) => b.gap)).toBe(false);
  }, 60_000);
});

describe("history", () => {
  it("pages by seq in both directions", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    for (let i = 0; i < 9; i++) {
      await a.chat.send({ conversationId: id, clientMsgId: `h${i}`, content: text(`h${i}`) });
    }
    const latest = await b.chat.getHistory({ conversationId: id, limit: 4 });
    expect(seqs(latest.events)).toEqual([7, 8, 9, 10]);
    expect(latest.hasMore).toBe(true);
    const older = await b.chat.getHistory({
      conversationId: id,
      anchorSeq: 7n,
      direction: 2,
      limit: 4,
    });
    expect(seqs(older.events)).toEqual([3, 4, 5, 6]);
    const oldest = await b.chat.getHistory({
      conversationId: id,
      anchorSeq: 3n,
      direction: 2,
      limit: 4,
    });
    expect(seqs(oldest.events)).toEqual([1, 2]);
    expect(oldest.hasMore).toBe(false);
    const forward = await b.chat.getHistory({
      conversationId: id,
      anchorSeq: 8n,
      direction: 1,
      limit: 4,
    });
    expect(seqs(forward.events)).toEqual([9, 10]);
    expect(forward.hasMore).toBe(false);
    await expect(
      b.chat.getHistory({ conversationId: id, anchorSeq: 99n, direction: 1 }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
  });

  it("serves the same events in every protocol and encoding, stored bytes or JSON", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await group(a, [b]);
    await a.chat.send({ conversationId: id, clientMsgId: "p1", content: text("plain ✓") });
    await b.chat.send({
      conversationId: id,
      clientMsgId: "p2",
      content: {
        text: "x".repeat(300),
        replyToSeq: 2n,
        attachments: [{ mediaRef: "m/1", mimeType: "image/png", sizeBytes: 5n, fileName: "a" }],
      },
    });
    await a.chat.editMessage({ conversationId: id, clientMsgId: "p3", targetSeq: 2n, text: "e" });
    await b.chat.addReaction({ conversationId: id, clientMsgId: "p4", targetSeq: 2n, emoji: "👍" });
    await a.chat.addMembers({ conversationId: id, userIds: [c.userId] });
    await a.chat.deleteMessage({ conversationId: id, clientMsgId: "p5", targetSeq: 3n });
    const protocols: Protocol[] = ["grpc", "connect", "grpc-web", "connect-json"];
    const pages = await Promise.all(
      protocols.map((p) => b.via(p).getHistory({ conversationId: id, limit: 100 })),
    );
    const syncs = await Promise.all(
      protocols.map((p) => b.via(p).sync({ cursors: [cursor(id, 1n)] })),
    );
    // Streams' sync frames too: Subscribe in every protocol (over HTTP/2 also
    // Connect JSON, which the edge's direct path serves), and the bidi Session;
    // each from a device of its own, within the streams-per-device cap.
    const devices = await Promise.all(protocols.map((p) => login(server!, "ben", `ben-${p}`)));
    const h2json = (u: User) =>
      createClient(
        ChatService,
        createConnectTransport({
          baseUrl: server!.url,
          httpVersion: "2",
          useBinaryFormat: false,
          interceptors: [
            (next) => (req) => {
              req.header.set("authorization", `Bearer ${u.token}`);
              return next(req);
            },
          ],
        }),
      );
    const streams = [
      ...protocols.map((p, i) => openSubscribe(devices[i]!.via(p), [cursor(id, 1n)])),
      openSubscribe(h2json(b), [cursor(id, 1n)]),
      openSession(b.via("grpc"), { cursors: [cursor(id, 1n)] }),
    ];
    await synced(...streams);
    const json = pages[3]!;
    expect(seqs(json.events)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(json.events.map((e) => e.kind.case)).toEqual([
      "conversationCreated",
      "messagePosted",
      "messagePosted",
      "messageEdited",
      "reactionAdded",
      "membersAdded",
      "messageDeleted",
    ]);
    for (const page of pages) {
      expect(page.events).toStrictEqual(json.events);
      expect(page.headSeq).toBe(7n);
      expect(page.hasMore).toBe(false);
    }
    for (const res of syncs) {
      expect(res.batches).toStrictEqual(syncs[3]!.batches);
      expect(res.batches[0]!.events).toStrictEqual(json.events.slice(1));
      expect(res.batches[0]!.headSeq).toBe(7n);
    }
    for (const [i, stream] of streams.entries()) {
      const [batch, ...more] = stream.frames.of("sync");
      expect(more, `stream ${i}`).toEqual([]);
      expect(batch, `stream ${i}`).toStrictEqual(syncs[3]!.batches[0]);
      stream.abort();
    }
  });

  it("gzips answers for clients that accept it, small pages and large ones alike", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    for (let i = 0; i < 40; i++) {
      const body = `m${i} ${"lorem ipsum ".repeat(90)}`;
      await a.chat.send({ conversationId: id, clientMsgId: `z${i}`, content: text(body) });
    }
    const all = await b.chat.getHistory({ conversationId: id, limit: 100 });
    for (const protocol of ["grpc", "connect"] as const) {
      const encodings: (string | null)[] = [];
      const seen: Interceptor = (next) => async (req) => {
        req.header.set("authorization", `Bearer ${b.token}`);
        const res = await next(req);
        encodings.push(res.header.get("grpc-encoding") ?? res.header.get("content-encoding"));
        return res;
      };
      const chat = createClient(ChatService, transport(server.url, protocol, [seen]));
      // About 5 KB (compressed in one synchronous call) and about 45 KB (the async way).
      const small = await chat.getHistory({ conversationId: id, limit: 5 });
      const large = await chat.getHistory({ conversationId: id, limit: 100 });
      expect(encodings, protocol).toEqual(["gzip", "gzip"]);
      expect(small.events).toStrictEqual(all.events.slice(-5));
      expect(large.events).toStrictEqual(all.events);
      expect(seqs(large.events)).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
    }
  });

  it("lets only members read", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await direct(a!, b!);
    const err = await c!.chat.getHistory({ conversationId: id }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.PermissionDenied);
    const missing = await c!.chat
      .getHistory({ conversationId: "c_00000000000000000000000000" })
      .catch((e: unknown) => e);
    expect((missing as ConnectError).code).toBe(Code.NotFound);
  });
});
