import { Code } from "@connectrpc/connect";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { type Event, MessageKind, Role } from "../../gen/chat/v1/event_pb.js";
import type { ConfigInput } from "../../lib/config.js";
import {
  direct,
  login,
  openSession,
  openSubscribe,
  seqs,
  settle,
  type User,
} from "../helpers/clients.js";
import { dropKeyspace, ensureCassandra, ensurePulsar } from "../helpers/dev-env.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

const text = (t: string) => ({ text: t });
const precondition = { code: Code.FailedPrecondition };
const invalid = { code: Code.InvalidArgument };
const denied = { code: Code.PermissionDenied };

let posted = 0;
async function post(u: User, conversationId: string, t: string) {
  const res = await u.chat.send({ conversationId, clientMsgId: `m-${++posted}`, content: text(t) });
  return res.event!.seq;
}

const byseq = (events: Event[]) => new Map(events.map((e) => [e.seq, e]));

describe("edit", () => {
  it("lets only the sender edit, and the edit event carries target and new text", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const watch = openSession(b.chat);
    await watch.frames.synced();
    const seq = await post(a, id, "helo");

    await expect(
      b.chat.editMessage({ conversationId: id, targetSeq: seq, text: "hijack" }),
    ).rejects.toMatchObject(denied);
    const edit = await a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "hello" });
    expect(edit.event!.seq).toBe(seq + 1n);
    expect(edit.event!.actorUserId).toBe("ann");
    expect(edit.event!.kind).toMatchObject({
      case: "messageEdited",
      value: { targetSeq: seq, text: "hello" },
    });
    await watch.frames.until((f) => f.events(id).some((e) => e.seq === seq + 1n));
    expect(watch.frames.events(id).at(-1)!.kind).toMatchObject({
      case: "messageEdited",
      value: { targetSeq: seq, text: "hello" },
    });
    // Editing again is a new event; the original message stays as it was posted.
    const again = await a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "hello!" });
    expect(again.event!.seq).toBe(seq + 2n);
    const history = byseq((await b.chat.getHistory({ conversationId: id })).events);
    expect(history.get(seq)!.kind).toMatchObject({
      case: "messagePosted",
      value: { content: { text: "helo" } },
    });
    watch.abort();
  });

  it("refuses targets that are not messages, unknown seqs and bad text", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "x");
    const editSeq = (await a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "y" }))
      .event!.seq;
    const reaction = (await a.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "👍" }))
      .event!.seq;

    // seq 1 is the creation event; edits and reactions are not messages either.
    for (const target of [1n, editSeq, reaction]) {
      await expect(
        a.chat.editMessage({ conversationId: id, targetSeq: target, text: "z" }),
      ).rejects.toMatchObject(precondition);
    }
    await expect(
      a.chat.editMessage({ conversationId: id, targetSeq: 99n, text: "z" }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    await expect(
      a.chat.editMessage({ conversationId: id, targetSeq: 0n, text: "z" }),
    ).rejects.toMatchObject(invalid);
    await expect(
      a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "" }),
    ).rejects.toMatchObject(invalid);
    await expect(
      a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "a\u0000b" }),
    ).rejects.toMatchObject(invalid);
    const head = (await a.chat.getHistory({ conversationId: id })).headSeq;
    expect(head).toBe(reaction);
  });

  it("is idempotent by client_msg_id", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "x");
    const req = { conversationId: id, targetSeq: seq, text: "y", clientMsgId: "edit-1" };
    const first = await a.chat.editMessage(req);
    const retry = await a.chat.editMessage(req);
    expect(retry.event!.eventId).toBe(first.event!.eventId);
    expect((await a.chat.getHistory({ conversationId: id })).headSeq).toBe(first.event!.seq);
  });
});

describe("delete for everyone", () => {
  async function setup(s: TestServer) {
    const [owner, admin, m1, m2] = await Promise.all(
      ["owner", "admin", "m1", "m2"].map((n) => login(s, n)),
    );
    const res = await owner!.chat.createGroupConversation({
      title: "g",
      memberUserIds: [admin!.userId, m1!.userId, m2!.userId],
    });
    const id = res.conversation!.conversationId;
    await owner!.chat.setMemberRole({
      conversationId: id,
      userId: admin!.userId,
      role: Role.ADMIN,
    });
    return { owner: owner!, admin: admin!, m1: m1!, m2: m2!, id };
  }

  it("is allowed to the sender and group admins/owners, not to other members", async () => {
    server = await startServer();
    const { owner, admin, m1, m2, id } = await setup(server);
    const own = await post(m1, id, "mine");
    const byM2 = await post(m2, id, "m2's");
    const byAdmin = await post(admin, id, "admin's");
    const byOwner = await post(owner, id, "owner's");

    await expect(
      m1.chat.deleteMessage({ conversationId: id, targetSeq: byM2 }),
    ).rejects.toMatchObject(denied);
    await expect(
      m1.chat.deleteMessage({ conversationId: id, targetSeq: byOwner }),
    ).rejects.toMatchObject(denied);
    const deleted: bigint[] = [];
    for (const [who, target] of [
      [m1, own],
      [admin, byM2],
      [owner, byAdmin],
      [admin, byOwner],
    ] as const) {
      const res = await who.chat.deleteMessage({ conversationId: id, targetSeq: target });
      expect(res.event!.actorUserId).toBe(who.userId);
      expect(res.event!.kind).toMatchObject({
        case: "messageDeleted",
        value: { targetSeq: target },
      });
      deleted.push(target);
    }
    const history = byseq((await m2.chat.getHistory({ conversationId: id })).events);
    for (const target of deleted) expect(history.get(target)!.redacted).toBe(true);
  });

  it("is not a moderator right in direct conversations", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "x");
    await expect(
      b.chat.deleteMessage({ conversationId: id, targetSeq: seq }),
    ).rejects.toMatchObject(denied);
    const res = await a.chat.deleteMessage({ conversationId: id, targetSeq: seq });
    expect(res.event!.seq).toBe(seq + 1n);
  });

  it("redacts the message and its edits everywhere, keeping the delete event as the tombstone", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const live = openSession(b.chat);
    await live.frames.synced();
    const seq = (
      await a.chat.send({
        conversationId: id,
        clientMsgId: "secret",
        content: {
          text: "my secret",
          attachments: [
            { mediaRef: "s3://bucket/secret.png", mimeType: "image/png", sizeBytes: 7n },
          ],
        },
      })
    ).event!.seq;
    const edit1 = (
      await a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "secret 2" })
    ).event!.seq;
    const keep = await post(a, id, "unrelated");
    const edit2 = (
      await a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "secret 3" })
    ).event!.seq;
    const keepEdit = (
      await a.chat.editMessage({ conversationId: id, targetSeq: keep, text: "kept" })
    ).event!.seq;
    const del = await a.chat.deleteMessage({ conversationId: id, targetSeq: seq });
    const tomb = del.event!;
    expect(tomb.redacted).toBe(false);
    expect(tomb.kind).toMatchObject({ case: "messageDeleted", value: { targetSeq: seq } });

    const check = (events: Event[]) => {
      const m = byseq(events);
      const original = m.get(seq)!;
      expect(original.redacted).toBe(true);
      expect(original.eventId).not.toBe("");
      expect(original.actorUserId).toBe("ann");
      expect(original.clientMsgId).toBe("secret");
      expect(original.kind.case).toBe("messagePosted");
      if (original.kind.case === "messagePosted") {
        expect(original.kind.value.content).toBeUndefined();
        expect(original.kind.value.messageKind).toBe(MessageKind.USER);
      }
      for (const e of [edit1, edit2]) {
        const ev = m.get(e)!;
        expect(ev.redacted).toBe(true);
        expect(ev.kind).toMatchObject({
          case: "messageEdited",
          value: { targetSeq: seq, text: "" },
        });
      }
      expect(m.get(keep)!.redacted).toBe(false);
      expect(m.get(keepEdit)!.kind).toMatchObject({ value: { text: "kept" } });
      expect(m.get(tomb.seq)!.kind).toMatchObject({
        case: "messageDeleted",
        value: { targetSeq: seq },
      });
      expect(
        JSON.stringify(events, (_k, v) => (typeof v === "bigint" ? String(v) : v)),
      ).not.toMatch(/secret [23]|my secret|secret\.png/);
    };
    check((await b.chat.getHistory({ conversationId: id })).events);
    check((await a.chat.getHistory({ conversationId: id })).events);
    check((await b.chat.sync({})).batches.find((x) => x.conversationId === id)!.events);
    const fresh = openSubscribe(b.chat);
    await fresh.frames.synced();
    check(fresh.frames.events(id));
    // A retry of the original send finds the redacted event, not the old content.
    const retry = await a.chat.send({
      conversationId: id,
      clientMsgId: "secret",
      content: text("my secret"),
    });
    expect(retry.duplicate).toBe(true);
    expect(retry.event!.redacted).toBe(true);
    // The live stream gets the tombstone as the next event.
    await live.frames.until((f) => f.events(id).some((e) => e.seq === tomb.seq));
    expect(live.frames.events(id).at(-1)!.kind.case).toBe("messageDeleted");
    live.abort();
    fresh.abort();
  });

  it("cannot be repeated, and a deleted message can no longer be edited or reacted to", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "x");
    await b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "👍" });
    const del = await a.chat.deleteMessage({ conversationId: id, targetSeq: seq });
    await expect(
      a.chat.deleteMessage({ conversationId: id, targetSeq: seq }),
    ).rejects.toMatchObject(precondition);
    await expect(
      a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "y" }),
    ).rejects.toMatchObject(precondition);
    await expect(
      b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "🎉" }),
    ).rejects.toMatchObject(precondition);
    await expect(
      b.chat.removeReaction({ conversationId: id, targetSeq: seq, emoji: "👍" }),
    ).rejects.toMatchObject(precondition);
    // The tombstone itself is not a message.
    await expect(
      a.chat.deleteMessage({ conversationId: id, targetSeq: del.event!.seq }),
    ).rejects.toMatchObject(precondition);
    await expect(a.chat.deleteMessage({ conversationId: id, targetSeq: 1n })).rejects.toMatchObject(
      precondition,
    );
    await expect(
      a.chat.deleteMessage({ conversationId: id, targetSeq: 50n }),
    ).rejects.toMatchObject({
      code: Code.NotFound,
    });
    expect((await a.chat.getHistory({ conversationId: id })).headSeq).toBe(del.event!.seq);
  });

  it("lets exactly one of concurrent deletes of the same message succeed", async () => {
    server = await startServer();
    const { owner, admin, m1, id } = await setup(server);
    const seq = await post(m1, id, "contested");
    // Moderators and the sender at once, and the sender's own retries on one connection.
    const results = await Promise.allSettled(
      [owner, admin, m1, m1, m1].map((u) =>
        u.chat.deleteMessage({ conversationId: id, targetSeq: seq }),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    expect(ok).toHaveLength(1);
    for (const r of results) {
      if (r.status === "rejected") expect(r.reason).toMatchObject(precondition);
    }
    const history = await m1.chat.getHistory({ conversationId: id });
    expect(history.events.filter((e) => e.kind.case === "messageDeleted")).toHaveLength(1);
  });

  it("refuses edits and reactions sequenced after a delete that is not yet durable", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "original");
    const [del, ...rest] = await Promise.allSettled([
      a.chat.deleteMessage({ conversationId: id, targetSeq: seq }),
      a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "raced edit 1" }),
      a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "raced edit 2" }),
      b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "👀" }),
    ]);
    expect(del.status).toBe("fulfilled");
    const tombSeq = del.status === "fulfilled" ? del.value.event!.seq : 0n;
    for (const r of rest) {
      if (r.status === "rejected") expect(r.reason).toMatchObject(precondition);
      else expect(r.value.event!.seq).toBeLessThan(tombSeq);
    }
    const history = await b.chat.getHistory({ conversationId: id });
    for (const e of history.events) {
      if (e.kind.case === "messageEdited") {
        expect(e.redacted).toBe(true);
        expect(e.kind.value.text).toBe("");
      }
      // Nothing may refer to the message after its tombstone.
      if (e.seq > tombSeq) expect(e.kind.value).not.toMatchObject({ targetSeq: seq });
    }
  });
});

describe("reactions", () => {
  it("adds and removes reactions as events with target and emoji", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const watch = openSubscribe(a.chat);
    await watch.frames.synced();
    const seq = await post(a, id, "x");
    const family = "👨‍👩‍👧‍👦";
    const added = await b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "👍" });
    const added2 = await b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: family });
    const removed = await b.chat.removeReaction({
      conversationId: id,
      targetSeq: seq,
      emoji: "👍",
    });
    expect(added.event!.kind).toMatchObject({
      case: "reactionAdded",
      value: { targetSeq: seq, emoji: "👍" },
    });
    expect(added2.event!.kind).toMatchObject({
      case: "reactionAdded",
      value: { targetSeq: seq, emoji: family },
    });
    expect(removed.event!.kind).toMatchObject({
      case: "reactionRemoved",
      value: { targetSeq: seq, emoji: "👍" },
    });
    expect([added, added2, removed].map((r) => Number(r.event!.seq))).toEqual([3, 4, 5]);
    for (const r of [added, added2, removed]) expect(r.event!.actorUserId).toBe("ben");
    await watch.frames.until((f) => f.events(id).some((e) => e.seq === 5n));
    await settle();
    expect(seqs(watch.frames.events(id))).toEqual([1, 2, 3, 4, 5]);
    expect(watch.frames.events(id).map((e) => e.kind.case)).toEqual([
      "conversationCreated",
      "messagePosted",
      "reactionAdded",
      "reactionAdded",
      "reactionRemoved",
    ]);
    // Reactions by a retry with the same key are one event.
    const k1 = await a.chat.addReaction({
      conversationId: id,
      targetSeq: seq,
      emoji: "🎉",
      clientMsgId: "r1",
    });
    const k2 = await a.chat.addReaction({
      conversationId: id,
      targetSeq: seq,
      emoji: "🎉",
      clientMsgId: "r1",
    });
    expect(k2.event!.eventId).toBe(k1.event!.eventId);
    watch.abort();
  });

  it("rejects invalid emoji and invalid targets", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "x");
    const tooLong = "👍".repeat(9); // 36 bytes of UTF-8
    for (const emoji of ["", " ", "\t", "👍 ", " 👍", "a b", tooLong, "\u0000"]) {
      await expect(
        b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji }),
      ).rejects.toMatchObject(invalid);
      await expect(
        b.chat.removeReaction({ conversationId: id, targetSeq: seq, emoji }),
      ).rejects.toMatchObject(invalid);
    }
    // Exactly 32 bytes is still one reaction.
    const max = "👍".repeat(8);
    const ok = await b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: max });
    expect(ok.event!.kind).toMatchObject({ value: { emoji: max } });
    await expect(
      b.chat.addReaction({ conversationId: id, targetSeq: 1n, emoji: "👍" }),
    ).rejects.toMatchObject(precondition);
    await expect(
      b.chat.addReaction({ conversationId: id, targetSeq: 77n, emoji: "👍" }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    await expect(
      b.chat.addReaction({ conversationId: id, targetSeq: 0n, emoji: "👍" }),
    ).rejects.toMatchObject(invalid);
    expect((await a.chat.getHistory({ conversationId: id })).headSeq).toBe(ok.event!.seq);
  });
});

/**
 * Where the router reads a user's reactions from: the SQLite store, a
 * Cassandra keyspace, or SQLite behind a Pulsar topic (read once consumed).
 */
const keyspaces: string[] = [];
afterAll(async () => {
  for (const k of keyspaces) await dropKeyspace(k);
});
const backends: [string, () => Promise<ConfigInput>][] = [
  ["SQLite", async () => ({})],
  [
    "Cassandra",
    async () => {
      const node = await ensureCassandra();
      const keyspace = `reactions_${process.pid}_${keyspaces.length}`;
      keyspaces.push(keyspace);
      return {
        cassandra: {
          contactPoints: [node.contactPoint],
          localDataCenter: node.localDataCenter,
          keyspace,
        },
      };
    },
  ],
  [
    "SQLite, the log in Pulsar",
    async () => ({
      pulsar: {
        webUrl: (await ensurePulsar()).webUrl,
        topic: `persistent://public/default/reactions-${process.pid}-${Date.now()}`,
      },
    }),
  ],
];

describe.each(backends)("reactions, events in %s", (_name, backend) => {
  it("keeps at most one of each emoji per user on a message, so clients can count events", async () => {
    server = await startServer(await backend());
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const watch = openSubscribe(a.chat);
    await watch.frames.synced();
    const seq = await post(a, id, "x");
    const react = (u: User, emoji: string) =>
      u.chat.addReaction({ conversationId: id, targetSeq: seq, emoji });
    const unreact = (u: User, emoji: string) =>
      u.chat.removeReaction({ conversationId: id, targetSeq: seq, emoji });

    const accepted = [(await react(b, "👍")).event!.seq];
    await expect(react(b, "👍")).rejects.toMatchObject(precondition);
    await expect(unreact(b, "🎉")).rejects.toMatchObject(precondition);
    // Another user's, and another message's, are their own.
    accepted.push((await react(a, "👍")).event!.seq);
    const other = await post(b, id, "y");
    accepted.push(other);
    accepted.push(
      (await b.chat.addReaction({ conversationId: id, targetSeq: other, emoji: "👍" })).event!.seq,
    );
    accepted.push((await unreact(b, "👍")).event!.seq);
    await expect(unreact(b, "👍")).rejects.toMatchObject(precondition);
    accepted.push((await react(b, "👍")).event!.seq);

    // Changes sent at once are judged against those sequenced before them, durable or not.
    for (const change of [react, unreact]) {
      const results = await Promise.allSettled(Array.from({ length: 5 }, () => change(b, "🔥")));
      const won = results.flatMap((r) => (r.status === "fulfilled" ? [r.value.event!.seq] : []));
      expect(won).toHaveLength(1);
      accepted.push(...won);
      for (const r of results) {
        if (r.status === "rejected") expect(r.reason).toMatchObject(precondition);
      }
    }

    await watch.frames.until((f) => f.events(id).some((e) => e.seq === accepted.at(-1)));
    await settle();
    // Nothing refused became an event: the seqs run on without holes.
    expect(seqs(watch.frames.events(id))).toEqual([1, 2, ...accepted.map(Number)]);
    const { events } = await a.chat.getHistory({ conversationId: id });
    const counts = new Map<string, number>();
    for (const { kind } of events) {
      if (kind.case !== "reactionAdded" && kind.case !== "reactionRemoved") continue;
      if (kind.value.targetSeq !== seq) continue;
      const n = counts.get(kind.value.emoji) ?? 0;
      counts.set(kind.value.emoji, n + (kind.case === "reactionAdded" ? 1 : -1));
    }
    expect(Object.fromEntries(counts)).toEqual({ "👍": 2, "🔥": 0 });
    watch.abort();
  }, 60_000);
});

describe("message content", () => {
  it("accepts replies up to the conversation head only", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const seq = await post(a, id, "question");
    await expect(
      b.chat.send({
        conversationId: id,
        clientMsgId: "r0",
        content: { text: "?", replyToSeq: seq + 1n },
      }),
    ).rejects.toMatchObject(invalid);
    await expect(
      b.chat.send({
        conversationId: id,
        clientMsgId: "r1",
        content: { text: "?", replyToSeq: 1000n },
      }),
    ).rejects.toMatchObject(invalid);
    const reply = await b.chat.send({
      conversationId: id,
      clientMsgId: "r2",
      content: { text: "answer", replyToSeq: seq },
    });
    expect(reply.event!.seq).toBe(seq + 1n);
    const stored = byseq((await a.chat.getHistory({ conversationId: id })).events).get(
      reply.event!.seq,
    )!;
    expect(stored.kind).toMatchObject({
      case: "messagePosted",
      value: { content: { text: "answer", replyToSeq: seq }, messageKind: MessageKind.USER },
    });
  });

  it("stores attachments as references and returns them unchanged", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const watch = openSession(b.chat);
    await watch.frames.synced();
    const attachments = [
      {
        mediaRef: "s3://media/abc123",
        mimeType: "image/jpeg",
        sizeBytes: 123_456n,
        fileName: "cat.jpg",
      },
      {
        mediaRef: "https://cdn.example.com/v/42",
        mimeType: "video/mp4",
        sizeBytes: 9_007_199_254_740_993n,
        fileName: "",
      },
    ];
    const sent = await a.chat.send({
      conversationId: id,
      clientMsgId: "att",
      content: { attachments },
    });
    const expected = { case: "messagePosted", value: { content: { text: "", attachments } } };
    expect(sent.event!.kind).toMatchObject(expected);
    const stored = byseq((await b.chat.getHistory({ conversationId: id })).events).get(
      sent.event!.seq,
    )!;
    expect(stored.kind).toMatchObject(expected);
    await watch.frames.until((f) => f.events(id).some((e) => e.seq === sent.event!.seq));
    expect(watch.frames.events(id).at(-1)!.kind).toMatchObject(expected);
    watch.abort();

    for (const bad of [
      { mediaRef: "" },
      { mediaRef: "x".repeat(2049) },
      { mediaRef: "ok", mimeType: "m".repeat(256) },
      { mediaRef: "ok", fileName: "f".repeat(256) },
    ]) {
      await expect(
        a.chat.send({ conversationId: id, clientMsgId: "bad", content: { attachments: [bad] } }),
      ).rejects.toMatchObject(invalid);
    }
    await expect(
      a.chat.send({
        conversationId: id,
        clientMsgId: "many",
        content: {
          text: "x",
          attachments: Array.from({ length: 11 }, (_, i) => ({ mediaRef: `r${i}` })),
        },
      }),
    ).rejects.toMatchObject(invalid);
    await expect(
      a.chat.send({ conversationId: id, clientMsgId: "empty", content: {} }),
    ).rejects.toMatchObject(invalid);
  });
});
