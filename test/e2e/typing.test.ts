import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  type Frames,
  group,
  login,
  openSession,
  openSubscribe,
  settle,
  synced,
} from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

const typingOf = (f: Frames, userId: string) => f.of("typing").filter((t) => t.userId === userId);

const replyTo = (f: Frames, frameId: string) => f.all.find((x) => x.replyToFrameId === frameId);

describe("typing relay", () => {
  it("reaches the other members' devices with the TTL, never the typer's own, and is never stored", async () => {
    server = await startServer({ session: { typingTtlMs: 2000 } });
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-web");
    const [b, c] = await Promise.all([login(server, "ben"), login(server, "cat")]);
    const id = await group(a1, [b, c]);
    const streams = {
      annPhone: openSession(a1.chat),
      annWeb: openSubscribe(a2.chat),
      ben: openSession(b.chat),
      cat: openSubscribe(c.chat),
    };
    await synced(...Object.values(streams));
    const head = (await a1.chat.getHistory({ conversationId: id })).headSeq;

    await a1.chat.setTyping({ conversationId: id, typing: true });
    for (const s of [streams.ben, streams.cat]) {
      await s.frames.until((f) => typingOf(f, a1.userId).length > 0, 5000, "typing");
      expect(typingOf(s.frames, a1.userId)).toEqual([
        expect.objectContaining({
          conversationId: id,
          userId: a1.userId,
          typing: true,
          ttlMs: 2000,
        }),
      ]);
    }

    // The Session frame path relays the same way and answers with `accepted`.
    streams.ben.send({
      frameId: "t1",
      action: { case: "setTyping", value: { conversationId: id, typing: true } },
    });
    await streams.ben.frames.until((f) => replyTo(f, "t1") !== undefined, 5000, "reply t1");
    expect(replyTo(streams.ben.frames, "t1")!.frame.case).toBe("accepted");
    await streams.annPhone.frames.until(
      (f) => typingOf(f, b.userId).length > 0,
      5000,
      "ben typing",
    );
    await streams.cat.frames.until((f) => typingOf(f, b.userId).length > 0, 5000, "ben typing");

    await settle(300);
    expect(streams.annPhone.frames.of("typing").filter((t) => t.userId === a1.userId)).toEqual([]);
    expect(streams.annWeb.frames.of("typing").filter((t) => t.userId === a1.userId)).toEqual([]);
    expect(typingOf(streams.ben.frames, b.userId)).toEqual([]);

    const history = await c.chat.getHistory({ conversationId: id });
    expect(history.headSeq).toBe(head);
    const sent = await a1.chat.send({
      conversationId: id,
      clientMsgId: "m1",
      content: { text: "hi" },
    });
    expect(sent.event!.seq).toBe(head + 1n);

    for (const s of Object.values(streams)) s.abort();
  });
});

describe("typing expiry", () => {
  it("sends typing=false after the TTL without another call", async () => {
    const ttl = 400;
    server = await startServer({ session: { typingTtlMs: ttl } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await group(a, [b]);
    const ben = openSession(b.chat);
    await synced(ben);
    const start = performance.now();
    await a.chat.setTyping({ conversationId: id, typing: true });
    await ben.frames.until((f) => typingOf(f, a.userId).length >= 1, 5000, "typing on");
    await ben.frames.until((f) => typingOf(f, a.userId).length >= 2, 5000, "expiry");
    const offAfter = performance.now() - start;
    expect(typingOf(ben.frames, a.userId).map((t) => [t.typing, t.ttlMs])).toEqual([
      [true, ttl],
      [false, 0],
    ]);
    // Timers may fire a little early relative to our clock, never far.
    expect(offAfter).toBeGreaterThanOrEqual(ttl - 50);
    await settle(ttl);
    expect(typingOf(ben.frames, a.userId)).toHaveLength(2);
    ben.abort();
  });

  it("relays an explicit typing=false at once and cancels the pending expiry", async () => {
    const ttl = 1500;
    server = await startServer({ session: { typingTtlMs: ttl } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await group(a, [b]);
    const ben = openSession(b.chat);
    await synced(ben);

    // Without an active indicator, typing=false is no news.
    await a.chat.setTyping({ conversationId: id, typing: false });
    await a.chat.setTyping({ conversationId: id, typing: true });
    await ben.frames.until((f) => typingOf(f, a.userId).length >= 1, 5000, "on");
    const stopAt = performance.now();
    await a.chat.setTyping({ conversationId: id, typing: false });
    await ben.frames.until((f) => typingOf(f, a.userId).length >= 2, ttl - 500, "explicit off");
    expect(performance.now() - stopAt).toBeLessThan(ttl - 500);
    expect(typingOf(ben.frames, a.userId).map((t) => t.typing)).toEqual([true, false]);
    // The expiry timer was cancelled: no second typing=false.
    await settle(ttl + 300);
    expect(typingOf(ben.frames, a.userId)).toHaveLength(2);
    ben.abort();
  });
});

describe("typing rate limit", () => {
  it("limits each user across devices; unary calls get RESOURCE_EXHAUSTED, Session frames an error frame", async () => {
    server = await startServer({ limits: { typingPerSecond: 1, typingBurst: 3 } });
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-web");
    const [b, c] = await Promise.all([login(server, "ben"), login(server, "cat")]);
    const id = await group(a1, [b, c]);

    for (let i = 0; i < 3; i++) await a1.chat.setTyping({ conversationId: id, typing: true });
    await expect(a1.chat.setTyping({ conversationId: id, typing: true })).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
    // The bucket is per user, not per device.
    await expect(a2.chat.setTyping({ conversationId: id, typing: true })).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
    // Stopping is not limited: ben must not see ann typing until it expires.
    await a1.chat.setTyping({ conversationId: id, typing: false });
    // Other users have their own bucket.
    await b.chat.setTyping({ conversationId: id, typing: true });

    const cat = openSession(c.chat);
    await synced(cat);
    for (let i = 0; i < 4; i++) {
      cat.send({
        frameId: `t${i}`,
        action: { case: "setTyping", value: { conversationId: id, typing: true } },
      });
    }
    await cat.frames.until((f) => replyTo(f, "t3") !== undefined, 5000, "reply t3");
    for (let i = 0; i < 3; i++) expect(replyTo(cat.frames, `t${i}`)!.frame.case).toBe("accepted");
    const err = replyTo(cat.frames, "t3")!.frame;
    expect(err.case).toBe("error");
    expect(err.case === "error" && err.value.code).toBe(8);
    expect(Code.ResourceExhausted).toBe(8);

    // The stream goes on: a send and a heartbeat are answered.
    cat.send({
      frameId: "s1",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "after", content: { text: "x" } },
      },
    });
    cat.send({ frameId: "h1", action: { case: "heartbeat", value: {} } });
    await cat.frames.until((f) => replyTo(f, "s1") !== undefined && replyTo(f, "h1") !== undefined);
    expect(replyTo(cat.frames, "s1")!.frame.case).toBe("sendAck");
    expect(replyTo(cat.frames, "h1")!.frame.case).toBe("heartbeat");
    expect(cat.frames.ended).toBe(false);

    // Tokens refill at the configured rate.
    await settle(1200);
    cat.send({
      frameId: "t4",
      action: { case: "setTyping", value: { conversationId: id, typing: true } },
    });
    await cat.frames.until((f) => replyTo(f, "t4") !== undefined, 5000, "reply t4");
    expect(replyTo(cat.frames, "t4")!.frame.case).toBe("accepted");
    cat.abort();
  });
});

describe("typing permissions", () => {
  it("rejects non-members, unknown conversations and bad ids", async () => {
    server = await startServer();
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [b!]);
    const ben = openSession(b!.chat);
    await synced(ben);

    await expect(c!.chat.setTyping({ conversationId: id, typing: true })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    await expect(
      c!.chat.setTyping({ conversationId: "c_00000000000000000000000000", typing: true }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    await expect(c!.chat.setTyping({ conversationId: "", typing: true })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await settle(200);
    expect(ben.frames.of("typing")).toEqual([]);
    ben.abort();
  });
});
