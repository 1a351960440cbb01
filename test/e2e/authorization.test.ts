import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { SignJWT } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import {
  ChatService,
  SendRequestSchema,
  SubscribeRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { MemberRemovalReason } from "../../gen/chat/v1/event_pb.js";
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
  userFromToken,
} from "../helpers/clients.js";
import { connectH2, rawCall } from "../helpers/raw-grpc.js";
import { partner, startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await server?.destroy();
  server = undefined;
});

const text = (t: string) => ({ text: t });
const denied = { code: Code.PermissionDenied };
const unauthenticated = { code: Code.Unauthenticated };

describe("non-members", () => {
  it("can neither act in nor read a conversation", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const ids = [await direct(a!, b!), await group(a!, [b!])];
    for (const id of ids) {
      const sent = await a!.chat.send({
        conversationId: id,
        clientMsgId: "m",
        content: text("hi"),
      });
      const seq = sent.event!.seq;
      const outsider = c!.chat;
      await expect(
        outsider.send({ conversationId: id, clientMsgId: "x", content: text("intrude") }),
      ).rejects.toMatchObject(denied);
      await expect(
        outsider.addReaction({ conversationId: id, targetSeq: seq, emoji: "👍" }),
      ).rejects.toMatchObject(denied);
      await expect(
        outsider.removeReaction({ conversationId: id, targetSeq: seq, emoji: "👍" }),
      ).rejects.toMatchObject(denied);
      await expect(
        outsider.editMessage({ conversationId: id, targetSeq: seq, text: "edited" }),
      ).rejects.toMatchObject(denied);
      await expect(
        outsider.deleteMessage({ conversationId: id, targetSeq: seq }),
      ).rejects.toMatchObject(denied);
      await expect(outsider.getHistory({ conversationId: id })).rejects.toMatchObject(denied);
      await expect(outsider.markRead({ conversationId: id, seq })).rejects.toMatchObject(denied);
      await expect(outsider.markDelivered({ conversationId: id, seq })).rejects.toMatchObject(
        denied,
      );
      await expect(outsider.setTyping({ conversationId: id, typing: true })).rejects.toMatchObject(
        denied,
      );
      await expect(outsider.getReadReceipts({ conversationId: id, seq })).rejects.toMatchObject(
        denied,
      );
      await expect(outsider.getConversation({ conversationId: id })).rejects.toMatchObject(denied);

      const history = await b!.chat.getHistory({ conversationId: id });
      expect(seqs(history.events)).toEqual([1, 2]);
    }
    // The same rules hold for actions sent as Session frames.
    const s = openSession(c!.chat);
    s.send({
      frameId: "f1",
      action: {
        case: "send",
        value: { conversationId: ids[0]!, clientMsgId: "y", content: text("x") },
      },
    });
    s.send({
      frameId: "f2",
      action: { case: "setTyping", value: { conversationId: ids[0]!, typing: true } },
    });
    s.send({
      frameId: "f3",
      action: { case: "markRead", value: { conversationId: ids[0]!, seq: 1n } },
    });
    await s.frames.until((f) => f.of("error").length >= 3);
    const errors = s.frames.all.filter((f) => f.frame.case === "error");
    expect(errors.map((f) => f.replyToFrameId).sort()).toEqual(["f1", "f2", "f3"]);
    for (const f of errors) {
      if (f.frame.case === "error") expect(f.frame.value.code).toBe(Code.PermissionDenied);
    }
    expect(s.frames.of("sendAck")).toHaveLength(0);
    s.abort();
    // Their presence is not visible to outsiders either.
    await expect(c!.chat.getPresence({ userIds: [a!.userId] })).rejects.toMatchObject(denied);
  });

  it("receive nothing of a conversation on their open streams", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const ab = await group(a!, [b!]);
    const control = await direct(a!, c!);
    const member = openSession(b!.chat);
    const outsiderSession = openSession(c!.chat);
    const outsiderWeb = openSubscribe(c!.via("connect"));
    for (const s of [member, outsiderSession, outsiderWeb]) await synced(s);

    const m = await a!.chat.send({ conversationId: ab, clientMsgId: "1", content: text("secret") });
    await a!.chat.send({ conversationId: ab, clientMsgId: "2", content: text("secret 2") });
    await a!.chat.addReaction({ conversationId: ab, targetSeq: m.event!.seq, emoji: "🔥" });
    await a!.chat.editMessage({ conversationId: ab, targetSeq: m.event!.seq, text: "edited" });
    await a!.chat.renameConversation({ conversationId: ab, title: "renamed" });
    await a!.chat.setTyping({ conversationId: ab, typing: true });
    // The sender has read its own messages already; reading the rest moves the cursor.
    await a!.chat.markRead({ conversationId: ab, seq: 6n });
    await member.frames.until(
      (f) =>
        f.events(ab).some((e) => e.seq === 6n) &&
        f.of("typing").length > 0 &&
        f.of("receipt").some((r) => r.conversationId === ab),
      5000,
      "member frames",
    );

    // A conversation the outsider does share proves their streams are live.
    await a!.chat.send({ conversationId: control, clientMsgId: "c", content: text("for cat") });
    for (const s of [outsiderSession, outsiderWeb]) {
      await s.frames.until((f) => f.events(control).some((e) => e.seq === 2n));
    }
    await settle(300);
    for (const s of [outsiderSession, outsiderWeb]) {
      expect(s.frames.events(ab)).toHaveLength(0);
      expect(s.frames.of("typing")).toHaveLength(0);
      expect(s.frames.of("receipt").filter((r) => r.conversationId === ab)).toHaveLength(0);
      expect(s.frames.of("sync").filter((x) => x.conversationId === ab)).toHaveLength(0);
    }
    for (const s of [member, outsiderSession, outsiderWeb]) s.abort();
  });
});

describe.each(["removed", "left"] as const)("a member who %s", (how) => {
  it("gets the removal event and nothing after it, also from history", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [b!, c!]);
    await a!.chat.send({ conversationId: id, clientMsgId: "before", content: text("before") });
    const stay = openSession(b!.chat);
    const gone = openSession(c!.chat);
    const goneWeb = openSubscribe(c!.via("grpc-web"));
    for (const s of [stay, gone, goneWeb]) await synced(s);
    await Promise.all(
      [gone, goneWeb].map((s) => s.frames.until((f) => f.events(id).some((e) => e.seq === 2n))),
    );

    const res =
      how === "removed"
        ? await a!.chat.removeMember({ conversationId: id, userId: c!.userId })
        : await c!.chat.leaveConversation({ conversationId: id });
    const removalSeq = res.event!.seq;
    expect(removalSeq).toBe(3n);
    for (const s of [gone, goneWeb]) {
      await s.frames.until((f) => f.events(id).some((e) => e.seq === removalSeq));
      const removal = s.frames.events(id).at(-1)!;
      expect(removal.kind).toMatchObject({
        case: "memberRemoved",
        value: {
          userId: "cat",
          reason: how === "removed" ? MemberRemovalReason.REMOVED : MemberRemovalReason.LEFT,
        },
      });
    }

    for (let i = 0; i < 3; i++) {
      await a!.chat.send({
        conversationId: id,
        clientMsgId: `after${i}`,
        content: text(`after${i}`),
      });
    }
    await b!.chat.setTyping({ conversationId: id, typing: true });
    await b!.chat.markRead({ conversationId: id, seq: 6n });
    await stay.frames.until((f) => f.events(id).some((e) => e.seq === 6n));
    await settle(300);
    for (const s of [gone, goneWeb]) {
      expect(seqs(s.frames.events(id))).toEqual([1, 2, 3]);
      expect(s.frames.of("typing")).toHaveLength(0);
      expect(s.frames.of("receipt").filter((r) => r.conversationId === id)).toHaveLength(0);
    }

    // History ends where sync does: at the removal, which is its head.
    const newest = await c!.chat.getHistory({ conversationId: id });
    expect(seqs(newest.events)).toEqual([1, 2, 3]);
    expect([newest.headSeq, newest.hasMore]).toEqual([3n, false]);
    const onward = await c!.chat.getHistory({ conversationId: id, anchorSeq: 1n, direction: 1 });
    expect(seqs(onward.events)).toEqual([2, 3]);
    expect([onward.headSeq, onward.hasMore]).toEqual([3n, false]);
    await expect(
      c!.chat.getHistory({ conversationId: id, anchorSeq: 3n, direction: 1 }),
    ).resolves.toMatchObject({ events: [], hasMore: false, headSeq: 3n });
    await expect(
      c!.chat.getHistory({ conversationId: id, anchorSeq: 4n, direction: 1 }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(
      c!.chat.getHistory({ conversationId: id, anchorSeq: 6n, direction: 2 }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });

    await expect(
      c!.chat.send({ conversationId: id, clientMsgId: "late", content: text("late") }),
    ).rejects.toMatchObject(denied);
    await expect(c!.chat.markRead({ conversationId: id, seq: 4n })).rejects.toMatchObject(denied);
    await expect(c!.chat.markDelivered({ conversationId: id, seq: 4n })).rejects.toMatchObject(
      denied,
    );
    await expect(c!.chat.setTyping({ conversationId: id, typing: true })).rejects.toMatchObject(
      denied,
    );
    await expect(
      c!.chat.addReaction({ conversationId: id, targetSeq: 2n, emoji: "👍" }),
    ).rejects.toMatchObject(denied);
    await expect(c!.chat.getConversation({ conversationId: id })).rejects.toMatchObject(denied);
    await expect(c!.chat.getReadReceipts({ conversationId: id, seq: 2n })).rejects.toMatchObject(
      denied,
    );
    expect((await c!.chat.listConversations({})).conversations).toHaveLength(0);

    // Reconnecting from a cursor before the removal yields the removal and stops there.
    for (const s of [stay, gone, goneWeb]) s.abort();
    const back = openSubscribe(c!.chat, [cursor(id, 2n)]);
    await synced(back);
    await settle();
    expect(seqs(back.frames.events(id))).toEqual([3]);
    back.abort();
  });

  it("fills a sync gap from history up to the removal, as the batch asks", async () => {
    server = await startServer();
    const [a, c] = await Promise.all(["ann", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [c!]);
    for (let i = 0; i < 6; i++) {
      await a!.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: text(`m${i}`) });
    }
    const res =
      how === "removed"
        ? await a!.chat.removeMember({ conversationId: id, userId: c!.userId })
        : await c!.chat.leaveConversation({ conversationId: id });
    const removalSeq = res.event!.seq;
    await a!.chat.send({ conversationId: id, clientMsgId: "after", content: text("after") });
    const sync = await c!.chat.sync({ cursors: [cursor(id, 1n)], limitPerConversation: 3 });
    const batch = sync.batches.find((x) => x.conversationId === id)!;
    expect(seqs(batch.events)).toEqual([6, 7, 8]);
    expect(batch.events.at(-1)!.seq).toBe(removalSeq);
    expect(batch.gap).toBe(true);
    const fill = await c!.chat.getHistory({
      conversationId: id,
      anchorSeq: batch.gapAfterSeq,
      direction: 1,
      limit: Number(batch.events[0]!.seq - batch.gapAfterSeq - 1n),
    });
    expect(seqs(fill.events)).toEqual([2, 3, 4, 5]);
    expect(fill.headSeq).toBe(removalSeq);
    // Paging on stops at the removal.
    const rest = await c!.chat.getHistory({
      conversationId: id,
      anchorSeq: 5n,
      direction: 1,
      limit: 10,
    });
    expect(seqs(rest.events)).toEqual([6, 7, 8]);
    expect(rest.hasMore).toBe(false);
  });

  it("is not sent the removal again once its device acknowledged it", async () => {
    server = await startServer();
    const [a, c] = await Promise.all(["ann", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [c!]);
    await a!.chat.send({ conversationId: id, clientMsgId: "x", content: text("x") });
    await c!.chat.markDelivered({ conversationId: id, seq: 2n });
    const res =
      how === "removed"
        ? await a!.chat.removeMember({ conversationId: id, userId: c!.userId })
        : await c!.chat.leaveConversation({ conversationId: id });
    const removalSeq = res.event!.seq;
    await a!.chat.send({ conversationId: id, clientMsgId: "y", content: text("y") });
    const first = openSubscribe(c!.chat);
    await synced(first);
    await settle(50);
    expect(seqs(first.frames.events(id))).toEqual([Number(removalSeq)]);
    first.abort();

    await c!.chat.markDelivered({ conversationId: id, seq: removalSeq });
    // Acknowledging past the removal stays refused.
    await expect(
      c!.chat.markDelivered({ conversationId: id, seq: removalSeq + 1n }),
    ).rejects.toMatchObject(denied);
    for (const open of [() => openSubscribe(c!.chat), () => openSession(c!.chat)]) {
      const again = open();
      await synced(again);
      await settle(50);
      expect(seqs(again.frames.events(id))).toEqual([]);
      again.abort();
    }
    const sync = await c!.chat.sync({});
    expect(sync.batches.filter((b) => b.conversationId === id)).toEqual([]);
  });

  it("gets everything up to the removal on a stream that fell behind, and nothing after", async () => {
    server = await startServer({ limits: { outboxMaxFrames: 16, lagTimeoutMs: 60_000 } });
    const [a, c] = await Promise.all(["ann", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [c!]);
    // Cat's stream has a tiny receive window: once it stops reading, the
    // stream falls behind and must catch up from the store.
    const h2 = await connectH2(server.url, { initialWindowSize: 1024 });
    cleanups.push(() => h2.destroy());
    const slow = rawCall(
      h2,
      "/chat.v1.ChatService/Subscribe",
      c!.token,
      toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema)),
    );
    await slow.frames.synced();
    slow.stream.pause();
    for (let i = 0; i < 40; i++) {
      await a!.chat.send({
        conversationId: id,
        clientMsgId: `m${i}`,
        content: text("m".repeat(8000)),
      });
    }
    const res =
      how === "removed"
        ? await a!.chat.removeMember({ conversationId: id, userId: c!.userId })
        : await c!.chat.leaveConversation({ conversationId: id });
    await a!.chat.send({ conversationId: id, clientMsgId: "after", content: text("after") });
    expect(slow.frames.events(id).length).toBeLessThan(42);

    slow.stream.resume();
    await slow.frames.until(
      (f) => f.events(id).some((e) => e.kind.case === "memberRemoved"),
      10_000,
      "the removal",
    );
    await settle(300);
    expect(seqs(slow.frames.events(id))).toEqual(Array.from({ length: 42 }, (_, i) => i + 1));
    expect(slow.frames.events(id).at(-1)!.eventId).toBe(res.event!.eventId);
    expect(slow.frames.ended).toBe(false);
  }, 30_000);
});

describe("a removal right behind a refused append", () => {
  it("still shuts the removed member out: no send of theirs after it, nothing delivered after it", async () => {
    // A refused retry drops the router's view of the conversation while the
    // removal behind it waits for its seq; the changes after the removal must
    // be judged by a view that holds it. The window is a few milliseconds,
    // hence rounds of sends spread over it.
    server = await startServer({ limits: { sendBurst: 100_000, sendPerSecond: 100_000 } });
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const benLive = openSession(b!.chat);
    await synced(benLive);
    const tick = () => new Promise<void>((r) => setImmediate(r));
    const failures: string[] = [];
    for (let round = 0; round < 25; round++) {
      const id = await group(a!, [b!, c!], `g${round}`);
      await a!.chat.send({ conversationId: id, clientMsgId: "orig", content: text("o") });
      const retry = a!.chat.send({ conversationId: id, clientMsgId: "orig", content: text("o") });
      const removal = a!.chat.removeMember({ conversationId: id, userId: b!.userId });
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < 6; i++) {
        await (i % 2 === 0 ? tick() : settle(1));
        for (const u of [b!, c!]) {
          const key = `${u.userId}-${i}`;
          sends.push(
            u.chat
              .send({ conversationId: id, clientMsgId: key, content: text(key) })
              .catch(() => {}),
          );
        }
      }
      expect((await retry).duplicate).toBe(true);
      const removedAt = (await removal).event!.seq;
      await Promise.all(sends);
      const afterwards = await b!.chat
        .send({ conversationId: id, clientMsgId: "after", content: text("after") })
        .then(
          (r) => `accepted at ${r.event!.seq}`,
          (err: ConnectError) => (err.code === Code.PermissionDenied ? undefined : err.message),
        );
      const secret = await c!.chat.send({
        conversationId: id,
        clientMsgId: "secret",
        content: text("secret"),
      });
      await settle(30);
      const { events } = await a!.chat.getHistory({ conversationId: id, limit: 100 });
      expect(seqs(events)).toEqual(events.map((_, i) => i + 1));
      const bensLate = events
        .filter((e) => e.seq > removedAt && e.actorUserId === b!.userId)
        .map((e) => e.seq);
      const leaked = benLive.frames
        .events(id)
        .filter((e) => e.seq > removedAt)
        .map((e) => e.seq);
      if (bensLate.length || afterwards || leaked.length) {
        failures.push(
          `round ${round}: removed at ${removedAt}; ben's later events ${bensLate}; ben's send afterwards ${afterwards}; ben received ${leaked} (secret at ${secret.event!.seq})`,
        );
      }
    }
    benLive.abort();
    expect(failures).toEqual([]);
  });
});

/** Builds a token by hand, as an attacker (or a test) would. */
async function forge(
  key: Uint8Array,
  kid: string,
  claims: Record<string, unknown>,
  opts: { sub?: string; exp?: number; iss?: string; aud?: string } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", kid, typ: "JWT" })
    .setIssuedAt(now)
    .setIssuer(opts.iss ?? "relaychat")
    .setAudience(opts.aud ?? "chat.v1")
    .setExpirationTime(opts.exp ?? now + 600);
  if (opts.sub !== undefined) jwt.setSubject(opts.sub);
  return jwt.sign(key);
}

const b64url = (s: string) => Buffer.from(s).toString("base64url");
const unb64url = (s: string) => Buffer.from(s, "base64url").toString("utf8");

describe("identity", () => {
  it("has no way to name a sender: requests carry none, events carry the token's user and device", async () => {
    const fields = SendRequestSchema.fields.map((f) => f.name);
    expect(fields).toEqual(["conversation_id", "client_msg_id", "content"]);
    for (const method of ChatService.methods) {
      for (const f of method.input.fields) {
        expect(f.name).not.toMatch(/sender|actor|from_user|as_user/);
      }
    }

    server = await startServer();
    const phone = await login(server, "ann", "ann-phone");
    const laptop = await login(server, "ann", "ann-laptop");
    const b = await login(server, "ben", "ben-phone");
    const id = await direct(phone, b);
    const watch = openSession(b.chat);
    await synced(watch);

    const viaUnary = await phone.chat.send({
      conversationId: id,
      clientMsgId: "u",
      content: text("u"),
    });
    const viaConnect = await laptop
      .via("connect")
      .send({ conversationId: id, clientMsgId: "c", content: text("c") });
    const edit = await phone.chat.editMessage({ conversationId: id, targetSeq: 2n, text: "u2" });
    const react = await b.chat.addReaction({ conversationId: id, targetSeq: 2n, emoji: "👍" });
    const s = openSession(laptop.chat, { subscribe: false });
    s.send({
      frameId: "f",
      action: { case: "send", value: { conversationId: id, clientMsgId: "s", content: text("s") } },
    });
    await s.frames.until((f) => f.of("sendAck").length > 0);

    expect([viaUnary.event!.actorUserId, viaUnary.event!.actorDeviceId]).toEqual([
      "ann",
      "ann-phone",
    ]);
    expect([viaConnect.event!.actorUserId, viaConnect.event!.actorDeviceId]).toEqual([
      "ann",
      "ann-laptop",
    ]);
    expect([edit.event!.actorUserId, edit.event!.actorDeviceId]).toEqual(["ann", "ann-phone"]);
    expect([react.event!.actorUserId, react.event!.actorDeviceId]).toEqual(["ben", "ben-phone"]);
    await watch.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "s"));
    const seen = Object.fromEntries(
      watch.frames
        .events(id)
        .filter((e) => e.seq > 1n)
        .map((e) => [Number(e.seq), `${e.actorUserId}/${e.actorDeviceId}`]),
    );
    expect(seen).toEqual({
      2: "ann/ann-phone",
      3: "ann/ann-laptop",
      4: "ann/ann-phone",
      5: "ben/ben-phone",
      6: "ann/ann-laptop",
    });
    const me = await laptop.chat.getMe({});
    expect([me.user!.userId, me.device!.deviceId]).toEqual(["ann", "ann-laptop"]);
    s.abort();
    watch.abort();
  });

  it("rejects missing, tampered, mis-signed, expired and mis-bound tokens with UNAUTHENTICATED", async () => {
    const secret = randomBytes(32);
    server = await startServer({
      auth: { signingKeys: [{ kid: "k1", secret }], activeKeyId: "k1" },
    });
    const a = await login(server, "ann", "ann-phone");
    await login(server, "ben", "ben-phone");
    const srv = server;
    const as = (token: string, protocol: Protocol = "grpc") =>
      userFromToken(srv, "ann", "ann-phone", token).via(protocol);

    // A correctly signed, well-formed token works: the forgeries below differ in one thing each.
    const good = await forge(secret, "k1", { did: "ann-phone" }, { sub: "ann" });
    expect((await as(good).getMe({})).user!.userId).toBe("ann");

    const [header, payload, signature] = a.token.split(".") as [string, string, string];
    const claims = JSON.parse(unb64url(payload)) as Record<string, unknown>;
    const tampered = [header, b64url(JSON.stringify({ ...claims, sub: "ben" })), signature].join(
      ".",
    );
    const longer = [
      header,
      b64url(JSON.stringify({ ...claims, exp: (claims.exp as number) + 86_400 })),
      signature,
    ].join(".");
    const now = Math.floor(Date.now() / 1000);
    const bad: Record<string, string> = {
      tampered,
      longer,
      truncatedSignature: `${header}.${payload}.${signature.slice(0, -4)}`,
      otherKey: await forge(randomBytes(32), "k1", { did: "ann-phone" }, { sub: "ann" }),
      unknownKid: await forge(secret, "k2", { did: "ann-phone" }, { sub: "ann" }),
      expired: await forge(secret, "k1", { did: "ann-phone" }, { sub: "ann", exp: now - 5 }),
      otherUsersDevice: await forge(secret, "k1", { did: "ben-phone" }, { sub: "ann" }),
      unknownDevice: await forge(secret, "k1", { did: "ann-ghost" }, { sub: "ann" }),
      noDevice: await forge(secret, "k1", {}, { sub: "ann" }),
      noSubject: await forge(secret, "k1", { did: "ann-phone" }),
      wrongIssuer: await forge(secret, "k1", { did: "ann-phone" }, { sub: "ann", iss: "evil" }),
      wrongAudience: await forge(secret, "k1", { did: "ann-phone" }, { sub: "ann", aud: "x" }),
      unsigned: `${b64url(JSON.stringify({ alg: "none", typ: "JWT", kid: "k1" }))}.${payload}.`,
      garbage: "not-a-jwt",
    };
    for (const [name, token] of Object.entries(bad)) {
      const err = await as(token)
        .getMe({})
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err, name).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code, name).toBe(Code.Unauthenticated);
    }

    for (const protocol of ["grpc", "connect", "grpc-web"] as const) {
      const anonymous = createClient(ChatService, transport(srv.url, protocol));
      await expect(anonymous.getMe({})).rejects.toMatchObject(unauthenticated);
      await expect(as(bad.expired!, protocol).listConversations({})).rejects.toMatchObject(
        unauthenticated,
      );
    }
    // Streams are refused before they start.
    const s = openSession(as(tampered));
    await s.frames.untilEnded();
    expect(s.frames.error?.code).toBe(Code.Unauthenticated);
    expect(s.frames.of("ready")).toHaveLength(0);
    const sub = openSubscribe(as(bad.otherKey!, "connect"));
    await sub.frames.untilEnded();
    expect(sub.frames.error?.code).toBe(Code.Unauthenticated);
    // Partner credentials are not a user identity.
    const basic = `Basic ${Buffer.from(`${partner.key}:${partner.secret}`).toString("base64")}`;
    const asPartner = createClient(
      ChatService,
      transport(srv.url, "grpc", [
        (next) => (req) => {
          req.header.set("authorization", basic);
          return next(req);
        },
      ]),
    );
    await expect(asPartner.getMe({})).rejects.toMatchObject(unauthenticated);
  });
});
