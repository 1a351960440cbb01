import http from "node:http";
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  GetMeRequestSchema,
  HistoryDirection,
  SubscribeRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import {
  cursor,
  direct,
  login,
  openSession,
  openSubscribe,
  seqs,
  settle,
  type User,
} from "../helpers/clients.js";
import { connectH2, envelope, frameType, rawCall, rawH2 } from "../helpers/raw-grpc.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await server?.destroy();
  server = undefined;
});

const text = (t: string) => ({ text: t });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const subscribeRequest = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema));

/** Polls until `check` holds; fails after timeoutMs. */
async function until(check: () => boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * A group of ann and sid, and a stream of sid's (Subscribe, or a Session
 * that subscribed) on its own connection with a tiny receive window that
 * stopped reading after `sent` messages of 8 KB: far more than the
 * transport buffers hold.
 */
async function stalledStream(
  s: TestServer,
  opts: { path: "Subscribe" | "Session"; sent: number; sidDevice?: string },
) {
  const [a, sid] = await Promise.all([login(s, "ann"), login(s, "sid", opts.sidDevice)]);
  const group = await a.chat.createGroupConversation({ title: "g", memberUserIds: [sid.userId] });
  const id = group.conversation!.conversationId;
  const h2 = await connectH2(s.url, { initialWindowSize: 1024 });
  cleanups.push(() => h2.destroy());
  const path = `/chat.v1.ChatService/${opts.path}`;
  const slow =
    opts.path === "Subscribe"
      ? rawCall(h2, path, sid.token, subscribeRequest)
      : rawCall(h2, path, sid.token);
  if (opts.path === "Session") slow.send({ action: { case: "subscribe", value: {} } });
  await slow.frames.synced();
  slow.stream.pause();
  const body = "m".repeat(8000);
  for (let i = 0; i < opts.sent; i++) {
    await a.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: text(body) });
  }
  return { a, sid, id, slow };
}

/** Every event of a conversation, read through history. */
async function historyOf(u: User, conversationId: string): Promise<Event[]> {
  const out: Event[] = [];
  let anchor = 0n;
  for (;;) {
    const page = await u.chat.getHistory({
      conversationId,
      anchorSeq: anchor,
      direction: HistoryDirection.FORWARD,
      limit: 500,
    });
    out.push(...page.events);
    if (!page.hasMore) return out;
    anchor = page.events.at(-1)!.seq;
  }
}

/** Asserts every acknowledged event is stored at its seq, in a history without holes. */
async function expectStored(u: User, conversationId: string, acked: Event[]) {
  const history = await historyOf(u, conversationId);
  // Seqs stay contiguous: nothing rejected took a seq.
  expect(seqs(history)).toEqual(history.map((_, i) => i + 1));
  const stored = new Map(history.map((e) => [e.eventId, e]));
  for (const e of acked) {
    expect(stored.get(e.eventId)?.seq, `acked event ${e.clientMsgId}`).toBe(e.seq);
  }
  return history;
}

describe("send rate limit", () => {
  it("rejects unary sends beyond the burst with RESOURCE_EXHAUSTED while another user sends freely", async () => {
    // A refill of one token per 100 s makes the burst the exact budget of the test.
    server = await startServer({ limits: { sendPerSecond: 0.01, sendBurst: 5 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const annSends = Array.from({ length: 8 }, (_, i) =>
      a.chat.send({ conversationId: id, clientMsgId: `a${i}`, content: text(`a${i}`) }),
    );
    const benSends = Array.from({ length: 5 }, (_, i) =>
      b.chat.send({ conversationId: id, clientMsgId: `b${i}`, content: text(`b${i}`) }),
    );
    const annResults = await Promise.allSettled(annSends);
    const benResults = await Promise.allSettled(benSends);

    const annOk = annResults.flatMap((r) => (r.status === "fulfilled" ? [r.value.event!] : []));
    const annFailed = annResults.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
    expect(annOk).toHaveLength(5);
    expect(annFailed).toHaveLength(3);
    for (const err of annFailed) {
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    }
    // The other user's bucket is separate: all of ben's sends went through.
    expect(benResults.every((r) => r.status === "fulfilled")).toBe(true);
    const benOk = benResults.flatMap((r) => (r.status === "fulfilled" ? [r.value.event!] : []));

    const history = await expectStored(b, id, [...annOk, ...benOk]);
    expect(history).toHaveLength(1 + 5 + 5);
    const rejectedKeys = annResults.flatMap((r, i) => (r.status === "rejected" ? [`a${i}`] : []));
    expect(history.filter((e) => rejectedKeys.includes(e.clientMsgId))).toEqual([]);
  });

  it("charges edits, deletes and reactions to the same budget as messages", async () => {
    server = await startServer({ limits: { sendPerSecond: 0.01, sendBurst: 5 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const first = await a.chat.send({ conversationId: id, clientMsgId: "m1", content: text("x") });
    const seq = first.event!.seq;
    await a.chat.send({ conversationId: id, clientMsgId: "m2", content: text("y") });
    await a.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "👍" });
    await a.chat.editMessage({ conversationId: id, targetSeq: seq, text: "x2" });
    await a.chat.deleteMessage({ conversationId: id, targetSeq: seq + 1n });
    const over = { code: Code.ResourceExhausted };
    await expect(
      a.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "🎉" }),
    ).rejects.toMatchObject(over);
    await expect(
      a.chat.send({ conversationId: id, clientMsgId: "m3", content: text("z") }),
    ).rejects.toMatchObject(over);
    // Another user's budget is their own; nothing refused became an event.
    await b.chat.addReaction({ conversationId: id, targetSeq: seq, emoji: "🎉" });
    const { events } = await b.chat.getHistory({ conversationId: id });
    expect(events.map((e) => [e.actorUserId, e.kind.case])).toEqual([
      ["ann", "conversationCreated"],
      ["ann", "messagePosted"],
      ["ann", "messagePosted"],
      ["ann", "reactionAdded"],
      ["ann", "messageEdited"],
      ["ann", "messageDeleted"],
      ["ben", "reactionAdded"],
    ]);
  });

  it("answers an over-limit Session send with an error frame (code 8, client_msg_id) and keeps the stream", async () => {
    server = await startServer({ limits: { sendPerSecond: 0.01, sendBurst: 5 } });
    const [c, d] = await Promise.all([login(server, "cat"), login(server, "dan")]);
    const id = await direct(c, d);
    const cat = openSession(c.chat);
    const dan = openSession(d.chat);
    await cat.frames.synced();
    await dan.frames.synced();

    // Both users send at the same time; only cat exceeds the burst.
    for (let i = 0; i < 7; i++) {
      cat.send({
        frameId: `c${i}`,
        action: {
          case: "send",
          value: { conversationId: id, clientMsgId: `cat${i}`, content: text(`c${i}`) },
        },
      });
      if (i < 4) {
        dan.send({
          frameId: `d${i}`,
          action: {
            case: "send",
            value: { conversationId: id, clientMsgId: `dan${i}`, content: text(`d${i}`) },
          },
        });
      }
    }
    await cat.frames.until(
      (f) => f.of("sendAck").length + f.of("error").length >= 7,
      10_000,
      "7 answers",
    );
    await dan.frames.until((f) => f.of("sendAck").length >= 4, 10_000, "dan's acks");

    // Frames of one conversation are handled in order, so the last two are the rejected ones.
    const catAnswers = cat.frames.all.filter(
      (f) => f.frame.case === "sendAck" || f.frame.case === "error",
    );
    const errors = catAnswers.filter((f) => f.frame.case === "error");
    expect(errors.map((f) => f.replyToFrameId).sort()).toEqual(["c5", "c6"]);
    for (const f of errors) {
      const e = f.frame.case === "error" ? f.frame.value : undefined;
      expect(e?.code).toBe(Code.ResourceExhausted);
      expect(e?.clientMsgId).toBe(`cat${f.replyToFrameId.slice(1)}`);
    }
    const catAcks = cat.frames.of("sendAck");
    expect(catAcks.map((a) => a.event!.clientMsgId).sort()).toEqual(
      ["cat0", "cat1", "cat2", "cat3", "cat4"].sort(),
    );
    expect(dan.frames.of("error")).toEqual([]);

    // The limited stream goes on: it answers a heartbeat and still receives events.
    cat.send({ frameId: "hb", action: { case: "heartbeat", value: {} } });
    await cat.frames.until(
      (f) => f.all.some((x) => x.frame.case === "heartbeat" && x.replyToFrameId === "hb"),
      5000,
      "heartbeat answer",
    );
    const late = await d.chat.send({
      conversationId: id,
      clientMsgId: "dan-late",
      content: text("late"),
    });
    await cat.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "dan-late"));
    expect(cat.frames.ended).toBe(false);

    const acked = [
      ...catAcks.map((a) => a.event!),
      ...dan.frames.of("sendAck").map((a) => a.event!),
      late.event!,
    ];
    const history = await expectStored(c, id, acked);
    expect(history.filter((e) => e.clientMsgId === "cat5" || e.clientMsgId === "cat6")).toEqual([]);
    cat.abort();
    dan.abort();
  });
});

describe("request rate limit", () => {
  it("gives each user a call budget: one user's flood gets RESOURCE_EXHAUSTED, others are served", async () => {
    server = await startServer({ limits: { requestsPerSecond: 1, requestBurst: 5 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => a.chat.getMe({})));
    const refused = results.filter(
      (r) => r.status === "rejected" && ConnectError.from(r.reason).code === Code.ResourceExhausted,
    );
    expect(results.filter((r) => r.status === "fulfilled").length).toBeLessThanOrEqual(5);
    expect(refused.length).toBeGreaterThanOrEqual(3);
    // A stream open counts against the same budget.
    const s = openSession(a.chat);
    await s.frames.untilEnded();
    expect(s.frames.error?.code).toBe(Code.ResourceExhausted);
    // Another user is unaffected.
    expect((await b.chat.getMe({})).user?.userId).toBe("ben");
    // The budget refills.
    await sleep(1100);
    expect((await a.chat.getMe({})).user?.userId).toBe("ann");
  });

  it("charges a Session's frames as their unary calls: past the budget they get error frames and the stream goes on", async () => {
    server = await startServer({ limits: { requestsPerSecond: 1, requestBurst: 10 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const s = openSession(a.chat);
    await s.frames.synced();
    const frames = [
      (frameId: string) =>
        s.send({ frameId, action: { case: "markRead", value: { conversationId: id, seq: 1n } } }),
      (frameId: string) =>
        s.send({
          frameId,
          action: { case: "markDelivered", value: { conversationId: id, seq: 1n } },
        }),
      (frameId: string) =>
        s.send({ frameId, action: { case: "watchPresence", value: { userIds: [b.userId] } } }),
      (frameId: string) =>
        s.send({ frameId, action: { case: "unwatchPresence", value: { userIds: [b.userId] } } }),
      (frameId: string) => s.send({ frameId, action: { case: "heartbeat", value: {} } }),
    ];
    const n = 30;
    for (let i = 0; i < n; i++) frames[i % frames.length]!(`f${i}`);
    // Every frame is answered, by a result or an error (watchPresence by presence frames too).
    const answered = (f: typeof s.frames) =>
      new Set(f.all.map((x) => x.replyToFrameId).filter((r) => /^f\d+$/.test(r)));
    await s.frames.until((f) => answered(f).size >= n);
    const refused = s.frames.of("error").filter((e) => e.code === Code.ResourceExhausted);
    // The stream's open and its subscribe spent two of the burst of 10.
    expect(refused.length).toBeGreaterThanOrEqual(n - 10);
    expect(s.frames.of("error")).toHaveLength(refused.length);
    // Sends have their own bucket; the stream is still open and serves them.
    s.send({
      frameId: "send",
      action: { case: "send", value: { conversationId: id, clientMsgId: "m", content: text("m") } },
    });
    await s.frames.until((f) => f.of("sendAck").length === 1);
    s.end();
  });
});

describe("malformed and oversized frames", () => {
  it("ends only the stream that sent an undecodable gRPC frame, with INVALID_ARGUMENT", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const bad = rawCall(h2, "/chat.v1.ChatService/Session", a.token);
    bad.send({ action: { case: "subscribe", value: {} } });
    const ben = openSession(b.chat);
    await bad.frames.synced();
    await ben.frames.synced();
    const before = await a.chat.send({
      conversationId: id,
      clientMsgId: "before",
      content: text("x"),
    });
    await bad.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "before"));

    // A valid gRPC length prefix around bytes that are no protobuf message
    // (field number 536870911 with wire type 7).
    bad.write(envelope(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x07])));
    const outcome = await bad.outcome;
    expect(outcome.code).toBe(Code.InvalidArgument);
    expect(outcome.message).toBe("malformed request message");

    // The other user's stream still receives events and sends.
    const after = await a.chat.send({
      conversationId: id,
      clientMsgId: "after",
      content: text("y"),
    });
    await ben.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    ben.send({
      frameId: "b1",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "ben1", content: text("z") },
      },
    });
    await ben.frames.until((f) => f.of("sendAck").some((x) => x.event?.clientMsgId === "ben1"));
    // The same HTTP/2 connection serves a new stream, which gets the events it missed.
    const again = rawCall(h2, "/chat.v1.ChatService/Session", a.token);
    again.send({ action: { case: "subscribe", value: { cursors: [cursor(id, 0n)] } } });
    await again.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "ben1"));
    expect(seqs(again.frames.events(id))).toEqual([1, 2, 3, 4]);
    expect(ben.frames.ended).toBe(false);

    const benAck = ben.frames.of("sendAck").find((x) => x.event?.clientMsgId === "ben1")!;
    await expectStored(b, id, [before.event!, after.event!, benAck.event!]);
    again.end();
    ben.abort();
  });

  it("ends only the stream that sent a frame over frameMaxBytes, with RESOURCE_EXHAUSTED; its connection keeps serving", async () => {
    server = await startServer({ limits: { messageMaxBytes: 4096, frameMaxBytes: 8192 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const big = rawCall(h2, "/chat.v1.ChatService/Session", a.token);
    big.send({ action: { case: "subscribe", value: {} } });
    const ben = openSession(b.chat);
    await big.frames.synced();
    await ben.frames.synced();
    const first = await a.chat.send({
      conversationId: id,
      clientMsgId: "first",
      content: text("x"),
    });

    // A well-formed send frame whose encoding exceeds frameMaxBytes.
    big.send({
      frameId: "big",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "huge", content: text("h".repeat(8300)) },
      },
    });
    const outcome = await big.outcome;
    expect(outcome.code).toBe(Code.ResourceExhausted);
    expect(big.frames.of("sendAck")).toEqual([]);

    // A length prefix alone announcing too much is refused without waiting for the body.
    const announced = rawCall(h2, "/chat.v1.ChatService/Session", a.token);
    announced.write(envelope(Buffer.alloc(0), 1 << 20));
    expect((await announced.outcome).code).toBe(Code.ResourceExhausted);

    // Other streams and new calls on the same connection carry on.
    const same = rawCall(h2, "/chat.v1.ChatService/Session", a.token);
    same.send({ action: { case: "subscribe", value: {} } });
    await same.frames.synced();
    same.send({
      frameId: "ok",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "ok", content: text("ok") },
      },
    });
    await same.frames.until((f) => f.of("sendAck").length > 0);
    await ben.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "ok"));
    const getMe = rawCall(
      h2,
      "/chat.v1.ChatService/GetMe",
      a.token,
      toBinary(GetMeRequestSchema, create(GetMeRequestSchema)),
    );
    expect((await getMe.outcome).code).toBe(0);
    expect(h2.destroyed).toBe(false);
    expect(ben.frames.ended).toBe(false);

    const okAck = same.frames.of("sendAck")[0]!.event!;
    const history = await expectStored(b, id, [first.event!, okAck]);
    expect(history.some((e) => e.clientMsgId === "huge")).toBe(false);
    same.end();
    ben.abort();
  });
});

describe("HTTP/2 limits", () => {
  it("advertises SETTINGS_MAX_CONCURRENT_STREAMS; a conforming client's extra stream waits for a free slot", async () => {
    server = await startServer({ limits: { http2MaxConcurrentStreams: 6 } });
    const b = await login(server, "ben");
    const devices = await Promise.all(
      Array.from({ length: 6 }, (_, i) => login(server!, "ann", `ann-${i}`)),
    );
    const id = await direct(devices[0]!, b);
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    expect(h2.remoteSettings.maxConcurrentStreams).toBe(6);

    const subscribe = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema));
    const streams = devices.map((d) =>
      rawCall(h2, "/chat.v1.ChatService/Subscribe", d.token, subscribe),
    );
    for (const s of streams) await s.frames.synced();

    // A seventh call on the full connection is held back by the client, not failed.
    const extra = rawCall(
      h2,
      "/chat.v1.ChatService/GetMe",
      devices[0]!.token,
      toBinary(GetMeRequestSchema, create(GetMeRequestSchema)),
    );
    const early = await Promise.race([
      extra.outcome.then(() => "done"),
      sleep(400).then(() => "waiting"),
    ]);
    expect(early).toBe("waiting");

    // The six open streams are unaffected meanwhile.
    const sent = await b.chat.send({ conversationId: id, clientMsgId: "m1", content: text("m1") });
    for (const s of streams) {
      await s.frames.until((f) => f.events(id).some((e) => e.eventId === sent.event!.eventId));
    }
    // Freeing one slot lets the waiting call through.
    streams[5]!.stream.close(http2.constants.NGHTTP2_CANCEL);
    expect((await extra.outcome).code).toBe(0);
    expect(extra.messages).toHaveLength(1);
    for (const s of streams.slice(0, 5)) expect(s.frames.ended).toBe(false);
  });

  it("refuses streams beyond the limit from a peer that ignores it (Node ends that peer's connection with GOAWAY); other clients are unaffected", async () => {
    server = await startServer({ limits: { http2MaxConcurrentStreams: 4 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const ben = openSession(b.chat);
    await ben.frames.synced();

    const peer = await rawH2(server.port);
    cleanups.push(() => peer.close());
    const watch = envelope(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema)));
    const headers: [string, string][] = [
      [":method", "POST"],
      [":scheme", "http"],
      [":authority", "edge"],
      [":path", "/grpc.health.v1.Health/Watch"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ];
    // Streams 1, 3, 5, 7 fill the limit; 9 is one too many.
    for (const streamId of [1, 3, 5, 7, 9]) peer.request(streamId, headers, watch);
    const refused = () =>
      peer.received.some(
        (f) =>
          f.type === frameType.goaway ||
          (f.type === frameType.rstStream && f.streamId === 9 && f.payload.readUInt32BE(0) === 7),
      );
    await peer.until(refused, 5000, "GOAWAY or REFUSED_STREAM");
    // Stream 9 was never served.
    expect(peer.received.some((f) => f.type === frameType.headers && f.streamId === 9)).toBe(false);
    const goaway = peer.received.find((f) => f.type === frameType.goaway);
    if (goaway) {
      // The last stream the server processed is within the limit.
      expect(goaway.payload.readUInt32BE(0) & 0x7fffffff).toBeLessThan(9);
      await peer.until(() => peer.closed, 5000, "connection close");
    }

    // Everyone else keeps working.
    const sent = await a.chat.send({
      conversationId: id,
      clientMsgId: "after",
      content: text("x"),
    });
    await ben.frames.until((f) => f.events(id).some((e) => e.eventId === sent.event!.eventId));
    expect(ben.frames.ended).toBe(false);
    await expectStored(a, id, [sent.event!]);
    ben.abort();
  });

  it("rejects a header list over 16 KiB on HTTP/2 (ENHANCE_YOUR_CALM) and HTTP/1.1 (431) without harming other clients", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const ben = openSession(b.chat);
    await ben.frames.synced();

    const peer = await rawH2(server.port);
    cleanups.push(() => peer.close());
    const check = envelope(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema)));
    const headers: [string, string][] = [
      [":method", "POST"],
      [":scheme", "http"],
      [":authority", "edge"],
      [":path", "/grpc.health.v1.Health/Check"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ];
    peer.request(1, [...headers, ["x-padding", "p".repeat(20_000)]], check);
    await peer.until(
      () => peer.received.some((f) => f.type === frameType.rstStream && f.streamId === 1),
      5000,
      "RST_STREAM on stream 1",
    );
    const rst = peer.received.find((f) => f.type === frameType.rstStream && f.streamId === 1)!;
    expect(rst.payload.readUInt32BE(0)).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(peer.received.some((f) => f.type === frameType.headers && f.streamId === 1)).toBe(false);
    // Only that stream was refused: the same connection serves the next request.
    peer.request(3, headers, check);
    await peer.until(
      () => peer.received.some((f) => f.type === frameType.headers && f.streamId === 3),
      5000,
      "response on stream 3",
    );
    expect(peer.closed).toBe(false);

    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${server!.url}/chat.v1.ChatService/GetMe`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-padding": "p".repeat(20_000) },
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end("{}");
    });
    expect(status).toBe(431);

    const sent = await a.chat.send({
      conversationId: id,
      clientMsgId: "after",
      content: text("x"),
    });
    await ben.frames.until((f) => f.events(id).some((e) => e.eventId === sent.event!.eventId));
    expect((await a.via("connect").getMe({})).user?.userId).toBe("ann");
    ben.abort();
  });
});

describe("slow consumer", () => {
  it("sheds a stalled Subscribe stream (typing first) without slowing others, then catches it up in order from the store", async () => {
    server = await startServer({
      limits: {
        outboxMaxFrames: 16,
        sendPerSecond: 1000,
        sendBurst: 1000,
        typingPerSecond: 1000,
        typingBurst: 1000,
        lagTimeoutMs: 25_000,
      },
    });
    const [a, s, f] = await Promise.all([
      login(server, "ann"),
      login(server, "sid"),
      login(server, "fay"),
    ]);
    const group = await a.chat.createGroupConversation({
      title: "load",
      memberUserIds: [s.userId, f.userId],
    });
    const id = group.conversation!.conversationId;

    // The slow client has its own connection and a tiny receive window, so
    // once it stops reading the server's buffers fill after a few events.
    const h2 = await connectH2(server.url, { initialWindowSize: 1024 });
    cleanups.push(() => h2.destroy());
    const slow = rawCall(
      h2,
      "/chat.v1.ChatService/Subscribe",
      s.token,
      toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema)),
    );
    await slow.frames.synced();
    const fast = openSubscribe(f.chat);
    await fast.frames.synced();
    slow.stream.pause();

    // Large messages fill the transport buffers quickly; 60 of them are far
    // more than the 16-frame outbox holds, also behind the larger per-stream
    // write buffers of Node 22 and later (64 KiB before a write pushes back).
    const body = "m".repeat(8000);
    const acked: Event[] = [];
    for (let i = 0; i < 60; i++) {
      const res = await a.chat.send({
        conversationId: id,
        clientMsgId: `m${i}`,
        content: text(`${i}:${body}`),
      });
      acked.push(res.event!);
    }
    // The fast reader has everything while the slow one is still stalled.
    await fast.frames.until((x) => x.events(id).length >= 61, 10_000, "fast client's 61 events");
    expect(seqs(fast.frames.events(id))).toEqual(Array.from({ length: 61 }, (_, i) => i + 1));

    // Typing frames go to both; the stalled stream's full outbox sheds them.
    const typingSent = 20;
    for (let i = 0; i < typingSent; i++) {
      await a.chat.setTyping({ conversationId: id, typing: i % 2 === 0 });
    }
    await fast.frames.until(
      (x) => x.of("typing").length >= typingSent,
      5000,
      "fast client's typing",
    );

    // Delivery to others stays prompt while the slow stream is behind.
    const started = performance.now();
    const probe = await a.chat.send({
      conversationId: id,
      clientMsgId: "probe",
      content: text("probe"),
    });
    acked.push(probe.event!);
    await fast.frames.until(
      (x) => x.events(id).some((e) => e.clientMsgId === "probe"),
      5000,
      "probe",
    );
    expect(performance.now() - started).toBeLessThan(2000);
    expect(slow.frames.events(id).length).toBeLessThan(62);

    // Reading again, the slow client gets every event once and in order.
    slow.stream.resume();
    await slow.frames.until((x) => x.events(id).length >= 62, 15_000, "slow client's 62 events");
    await settle(300);
    expect(seqs(slow.frames.events(id))).toEqual(Array.from({ length: 62 }, (_, i) => i + 1));
    const slowTyping = slow.frames.of("typing").length;
    expect(slowTyping).toBeLessThan(typingSent);
    expect(slow.frames.ended).toBe(false);

    // And it is live again afterwards.
    const last = await a.chat.send({
      conversationId: id,
      clientMsgId: "last",
      content: text("last"),
    });
    acked.push(last.event!);
    await slow.frames.until(
      (x) => x.events(id).some((e) => e.clientMsgId === "last"),
      5000,
      "live event",
    );
    expect(seqs(slow.frames.events(id))).toEqual(Array.from({ length: 63 }, (_, i) => i + 1));
    await expectStored(f, id, acked);
    fast.abort();
  });

  it("lets go of a stalled stream the lag timeout ended without waiting for it to read, so its device resumes at once", async () => {
    server = await startServer({
      limits: {
        outboxMaxFrames: 16,
        sendPerSecond: 1000,
        sendBurst: 1000,
        lagTimeoutMs: 500,
        streamsPerDevice: 1,
      },
    });
    const { a, sid, id, slow } = await stalledStream(server, {
      path: "Subscribe",
      sent: 60,
      sidDevice: "sid-phone",
    });
    const edge = server.app.edge;
    await until(() => edge.sessionCount === 0, 5000, "the stalled session's release");
    expect(slow.frames.ended).toBe(false);

    // The device's one stream slot is free: a new stream syncs and is live.
    const again = openSubscribe(sid.chat);
    await again.frames.synced();
    await a.chat.send({ conversationId: id, clientMsgId: "live", content: text("live") });
    await again.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "live"));
    again.abort();

    // Reading again, the old stream ends with the sweeper's code.
    slow.stream.resume();
    expect((await slow.outcome).code).toBe(Code.ResourceExhausted);
    expect(slow.frames.events(id).some((e) => e.clientMsgId === "live")).toBe(false);
  });

  it("ends a revoked device's stalled stream at once, though it never reads again", async () => {
    server = await startServer({ limits: { sendPerSecond: 1000, sendBurst: 1000 } });
    // Enough to fill the transport buffers, far from the outbox cap: stalled, not behind.
    const { sid, slow } = await stalledStream(server, {
      path: "Subscribe",
      sent: 20,
      sidDevice: "sid-phone",
    });
    const laptop = await login(server, "sid", "sid-laptop");
    const edge = server.app.edge;
    expect(edge.sessionCount).toBe(1);
    await laptop.chat.revokeDevice({ deviceId: sid.deviceId });
    await until(() => edge.sessionCount === 0, 3000, "the revoked session's release");
    slow.stream.resume();
    expect((await slow.outcome).code).toBe(Code.Unauthenticated);
  });

  it("ends a stalled Session the client half-closed once it has not read for the lag timeout", async () => {
    server = await startServer({
      limits: { sendPerSecond: 1000, sendBurst: 1000, lagTimeoutMs: 500 },
    });
    const { slow } = await stalledStream(server, { path: "Session", sent: 20 });
    // Half-closed, the session ends cleanly: no sweeper check applies to it any more.
    slow.end();
    const edge = server.app.edge;
    await until(() => edge.sessionCount === 0, 3000, "the half-closed session's release");
    slow.stream.resume();
    expect((await slow.outcome).code).toBe(Code.ResourceExhausted);
  });
});
