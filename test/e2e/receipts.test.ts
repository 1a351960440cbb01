import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import type { Receipt } from "../../gen/chat/v1/model_pb.js";
import {
  direct,
  type Frames,
  group,
  login,
  openSession,
  openSubscribe,
  settle,
  synced,
  type User,
} from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

let msgNo = 0;
/** Posts one message and returns its seq. */
async function post(u: User, conversationId: string) {
  const res = await u.chat.send({
    conversationId,
    clientMsgId: `m${++msgNo}`,
    content: { text: `hello ${msgNo}` },
  });
  return res.event!.seq;
}

const receiptsOf = (f: Frames, userId: string) =>
  f.of("receipt").filter((r) => r.userId === userId);

/** Waits for a receipt frame of `userId` with exactly these cursors. */
const untilReceipt = (f: Frames, userId: string, delivered: bigint, read: bigint) =>
  f.until(
    (x) => receiptsOf(x, userId).some((r) => r.deliveredSeq === delivered && r.readSeq === read),
    5000,
    `receipt ${userId} d=${delivered} r=${read}`,
  );

const cursorsOf = (r: Receipt | undefined) => [r?.deliveredSeq, r?.readSeq];

describe("receipt cursors", () => {
  it("move forward only, read implies delivered, and bad seqs or non-members are rejected", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await direct(a!, b!);
    for (let i = 0; i < 3; i++) await post(a!, id); // seqs 2..4

    let res = await b!.chat.markDelivered({ conversationId: id, seq: 3n });
    expect(cursorsOf(res.receipt)).toEqual([3n, 0n]);
    expect(res.receipt!.userId).toBe(b!.userId);
    res = await b!.chat.markDelivered({ conversationId: id, seq: 2n });
    expect(cursorsOf(res.receipt)).toEqual([3n, 0n]);

    const read = await b!.chat.markRead({ conversationId: id, seq: 2n });
    expect(cursorsOf(read.receipt)).toEqual([3n, 2n]);
    // Reading past the delivered cursor carries it along.
    const further = await b!.chat.markRead({ conversationId: id, seq: 4n });
    expect(cursorsOf(further.receipt)).toEqual([4n, 4n]);
    const back = await b!.chat.markRead({ conversationId: id, seq: 3n });
    expect(cursorsOf(back.receipt)).toEqual([4n, 4n]);
    const backDelivered = await b!.chat.markDelivered({ conversationId: id, seq: 2n });
    expect(cursorsOf(backDelivered.receipt)).toEqual([4n, 4n]);

    for (const call of [b!.chat.markRead, b!.chat.markDelivered]) {
      await expect(call({ conversationId: id, seq: 5n })).rejects.toMatchObject({
        code: Code.InvalidArgument,
      });
      await expect(call({ conversationId: id, seq: 0n })).rejects.toMatchObject({
        code: Code.InvalidArgument,
      });
      await expect(call({ conversationId: id, seq: 2n }).then(() => "ok")).resolves.toBe("ok");
    }
    for (const call of [c!.chat.markRead, c!.chat.markDelivered]) {
      await expect(call({ conversationId: id, seq: 2n })).rejects.toMatchObject({
        code: Code.PermissionDenied,
      });
    }

    await expect(
      b!.chat.markRead({ conversationId: "c_00000000000000000000000000", seq: 1n }),
    ).rejects.toMatchObject({ code: Code.NotFound });

    // Rejected calls left the cursors where they were.
    const conv = (await b!.chat.getConversation({ conversationId: id })).conversation!;
    expect([conv.myDeliveredSeq, conv.myReadSeq]).toEqual([4n, 4n]);
  });
});

describe("receipt frames", () => {
  it("reach the other members and the reader's other devices, from Session frames and unary calls", async () => {
    server = await startServer();
    const a = await login(server, "ann", "ann-phone");
    const b1 = await login(server, "ben", "ben-phone");
    const b2 = await login(server, "ben", "ben-web");
    const id = await direct(a, b1);
    const s2 = await post(a, id);

    const ann = openSession(a.chat);
    const benPhone = openSession(b1.chat);
    const benWeb = openSubscribe(b2.chat);
    await synced(ann, benPhone, benWeb);

    benPhone.send({
      frameId: "r1",
      action: { case: "markRead", value: { conversationId: id, seq: s2 } },
    });
    await benPhone.frames.until(
      (f) => f.all.some((x) => x.frame.case === "accepted" && x.replyToFrameId === "r1"),
      5000,
      "accepted r1",
    );
    await untilReceipt(ann.frames, b1.userId, s2, s2);
    await untilReceipt(benWeb.frames, b1.userId, s2, s2);
    const first = receiptsOf(ann.frames, b1.userId)[0]!;
    expect(first.conversationId).toBe(id);

    const s3 = await post(a, id);
    const s4 = await post(a, id);
    benPhone.send({
      frameId: "d1",
      action: { case: "markDelivered", value: { conversationId: id, seq: s3 } },
    });
    await benPhone.frames.until(
      (f) => f.all.some((x) => x.frame.case === "accepted" && x.replyToFrameId === "d1"),
      5000,
      "accepted d1",
    );
    await untilReceipt(ann.frames, b1.userId, s3, s2);
    await untilReceipt(benWeb.frames, b1.userId, s3, s2);

    // The browser device uses the unary call; the phone hears about it.
    await b2.chat.markRead({ conversationId: id, seq: s4 });
    await untilReceipt(ann.frames, b1.userId, s4, s4);
    await untilReceipt(benPhone.frames, b1.userId, s4, s4);

    // A cursor that does not move is no news.
    const before = ann.frames.of("receipt").length;
    await b2.chat.markRead({ conversationId: id, seq: s3 });
    benPhone.send({
      frameId: "r2",
      action: { case: "markRead", value: { conversationId: id, seq: s2 } },
    });
    await benPhone.frames.until(
      (f) => f.all.some((x) => x.frame.case === "accepted" && x.replyToFrameId === "r2"),
      5000,
      "accepted r2",
    );
    await settle(300);
    expect(ann.frames.of("receipt")).toHaveLength(before);

    // A rejected receipt frame gets an error frame; the stream goes on.
    benPhone.send({
      frameId: "bad",
      action: { case: "markRead", value: { conversationId: id, seq: 99n } },
    });
    await benPhone.frames.until(
      (f) => f.all.some((x) => x.frame.case === "error" && x.replyToFrameId === "bad"),
      5000,
      "error frame",
    );
    const err = benPhone.frames.all.find((x) => x.replyToFrameId === "bad")!;
    expect(err.frame.case === "error" && err.frame.value.code).toBe(Code.InvalidArgument);
    expect(benPhone.frames.ended).toBe(false);

    for (const s of [ann, benPhone, benWeb]) s.abort();
  });
});

describe("unread counts", () => {
  it("count messages by others after my read cursor and drop to 0 after MarkRead", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const unread = async (u: User) => {
      const listed = (await u.chat.listConversations({})).conversations.find(
        (c) => c.conversationId === id,
      )!;
      const got = (await u.chat.getConversation({ conversationId: id })).conversation!;
      expect(got.unreadCount).toBe(listed.unreadCount);
      return got.unreadCount;
    };

    // The creation event is not a message.
    expect(await unread(b)).toBe(0);
    for (let i = 0; i < 3; i++) await post(a, id);
    expect(await unread(b)).toBe(3);
    expect(await unread(a)).toBe(0);

    await b.chat.markRead({ conversationId: id, seq: 3n });
    expect(await unread(b)).toBe(1);

    // Sending reads everything up to one's own message.
    const mine = await post(b, id);
    expect(await unread(b)).toBe(0);
    const conv = (await b.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.myReadSeq).toBe(mine);
    expect(await unread(a)).toBe(1);

    await post(b, id);
    expect(await unread(a)).toBe(2);
    const head = (await a.chat.getConversation({ conversationId: id })).conversation!.headSeq;
    await a.chat.markRead({ conversationId: id, seq: head });
    expect(await unread(a)).toBe(0);
  });

  it("do not count a message its sender deleted for everyone", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const gone = await post(a, id);
    await post(a, id);
    const unread = async () => {
      const listed = (await b.chat.listConversations({})).conversations[0]!;
      const got = (await b.chat.getConversation({ conversationId: id })).conversation!;
      return [listed.unreadCount, got.unreadCount];
    };
    expect(await unread()).toEqual([2, 2]);
    await a.chat.deleteMessage({ conversationId: id, targetSeq: gone });
    expect(await unread()).toEqual([1, 1]);
  });
});

describe("read by N of M", () => {
  it("counts the members other than the sender who had joined by then", async () => {
    server = await startServer();
    const [a, b, c, d, e] = await Promise.all(
      ["ann", "ben", "cat", "dan", "eve"].map((n) => login(server!, n)),
    );
    const id = await group(a!, [b!, c!]);
    const s2 = await post(a!, id);
    const rr = (u: User, seq: bigint) => u.chat.getReadReceipts({ conversationId: id, seq });

    let res = await rr(a!, s2);
    expect([res.readCount, res.deliveredCount, res.memberCount]).toEqual([0, 0, 2]);
    expect(res.receipts.map((r) => r.userId).sort()).toEqual([b!.userId, c!.userId]);

    await b!.chat.markRead({ conversationId: id, seq: s2 });
    res = await rr(a!, s2);
    expect([res.readCount, res.deliveredCount, res.memberCount]).toEqual([1, 1, 2]);
    await c!.chat.markDelivered({ conversationId: id, seq: s2 });
    res = await rr(c!, s2);
    expect([res.readCount, res.deliveredCount, res.memberCount]).toEqual([1, 2, 2]);
    await c!.chat.markRead({ conversationId: id, seq: s2 });
    res = await rr(b!, s2);
    expect([res.readCount, res.deliveredCount, res.memberCount]).toEqual([2, 2, 2]);

    // dan joins later: he is not counted for the earlier message, even once he reads.
    const added = await a!.chat.addMembers({ conversationId: id, userIds: [d!.userId] });
    const joined = added.event!.seq;
    const dansUnread = async () =>
      (await d!.chat.getConversation({ conversationId: id })).conversation!.unreadCount;
    // Messages from before he joined are not his to read.
    expect(await dansUnread()).toBe(0);
    await d!.chat.markRead({ conversationId: id, seq: joined });
    res = await rr(a!, s2);
    expect([res.readCount, res.memberCount]).toEqual([2, 2]);
    expect(res.receipts.map((r) => r.userId)).not.toContain(d!.userId);

    // A later message by cat counts everyone else, dan included.
    const s5 = await post(c!, id);
    res = await rr(a!, s5);
    expect(res.memberCount).toBe(3);
    expect(res.receipts.map((r) => r.userId).sort()).toEqual([a!.userId, b!.userId, d!.userId]);
    expect(res.readCount).toBe(0);
    expect(await dansUnread()).toBe(1);
    await d!.chat.markRead({ conversationId: id, seq: s5 });
    res = await rr(a!, s5);
    expect([res.readCount, res.deliveredCount]).toEqual([1, 1]);

    await expect(rr(a!, 0n)).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(rr(a!, s5 + 1n)).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(rr(e!, s2)).rejects.toMatchObject({ code: Code.PermissionDenied });
  });

  it("is not answered for events from before the viewer joined, which history hides too", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [b!]);
    const before = await post(a!, id);
    await b!.chat.markRead({ conversationId: id, seq: before });
    const added = await a!.chat.addMembers({ conversationId: id, userIds: [c!.userId] });
    const joined = added.event!.seq;
    const history = await c!.chat.getHistory({ conversationId: id });
    expect(history.events.map((e) => e.seq)).toEqual([joined]);
    await expect(
      c!.chat.getReadReceipts({ conversationId: id, seq: before }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    // Members who saw it still get the answer, and so does the newcomer from its join on.
    const seen = await b!.chat.getReadReceipts({ conversationId: id, seq: before });
    expect(seen.readCount).toBe(1);
    const fromJoin = await c!.chat.getReadReceipts({ conversationId: id, seq: joined });
    expect(fromJoin.memberCount).toBe(2);
  });
});

describe("large groups", () => {
  it("tell only the reader's own devices about a read, while small conversations hear it", async () => {
    server = await startServer({ limits: { receiptFanoutMaxMembers: 2 } });
    const [a, c, d] = await Promise.all(["ann", "cat", "dan"].map((n) => login(server!, n)));
    const b1 = await login(server, "ben", "ben-phone");
    const b2 = await login(server, "ben", "ben-web");
    const dm = await direct(a!, b1);
    const big = await group(a!, [b1, c!, d!]);
    const dmSeq = await post(a!, dm);
    const bigSeq = await post(a!, big);

    const streams = {
      ann: openSession(a!.chat),
      cat: openSession(c!.chat),
      dan: openSubscribe(d!.chat),
      benWeb: openSubscribe(b2.chat),
    };
    await synced(...Object.values(streams));

    // Two members are within the limit: the peer hears the read.
    await b1.chat.markRead({ conversationId: dm, seq: dmSeq });
    await untilReceipt(streams.ann.frames, b1.userId, dmSeq, dmSeq);

    await b1.chat.markRead({ conversationId: big, seq: bigSeq });
    await untilReceipt(streams.benWeb.frames, b1.userId, bigSeq, bigSeq);
    await settle(300);
    for (const name of ["ann", "cat", "dan"] as const) {
      const got = streams[name].frames.of("receipt").filter((r) => r.conversationId === big);
      expect(got, name).toHaveLength(0);
    }
    // The count is still there on demand.
    const res = await a!.chat.getReadReceipts({ conversationId: big, seq: bigSeq });
    expect([res.readCount, res.memberCount]).toEqual([1, 3]);

    for (const s of Object.values(streams)) s.abort();
  });
});
