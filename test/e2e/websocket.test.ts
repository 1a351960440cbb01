import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { SessionRequestSchema, SessionResponseSchema } from "../../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import {
  cursor,
  direct,
  Frames,
  login,
  openSession,
  seqs,
  settle,
  type User,
} from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
const sockets: WebSocket[] = [];
afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  await server?.destroy();
  server = undefined;
});

const text = (t: string) => ({ text: t });

interface WsSession {
  ws: WebSocket;
  frames: Frames;
  /** Resolves with the close code and reason once the socket has closed. */
  closed: Promise<{ code: number; reason: string }>;
  send(frame: MessageInitShape<typeof SessionRequestSchema>): void;
}

const wsUrl = (s: TestServer, path = "/v1/ws") => `ws://127.0.0.1:${s.port}${path}`;

/** Opens a WebSocket session; the token goes in the header unless `query` is set. */
async function openWs(
  s: TestServer,
  token: string,
  opts: { query?: boolean; subscribe?: boolean; cursors?: ReturnType<typeof cursor>[] } = {},
): Promise<WsSession> {
  const url = opts.query ? `${wsUrl(s)}?access_token=${encodeURIComponent(token)}` : wsUrl(s);
  const ws = new WebSocket(
    url,
    opts.query ? {} : { headers: { authorization: `Bearer ${token}` } },
  );
  sockets.push(ws);
  const frames = new Frames();
  ws.on("message", (data, isBinary) => {
    expect(isBinary).toBe(true);
    const f = fromBinary(SessionResponseSchema, data as Buffer).frame;
    if (f) frames.add(f);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on("close", (code, reason) => {
      frames.end();
      resolve({ code, reason: reason.toString() });
    });
  });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  const session: WsSession = {
    ws,
    frames,
    closed,
    send: (f) => ws.send(toBinary(SessionRequestSchema, create(SessionRequestSchema, f))),
  };
  if (opts.subscribe !== false) {
    session.send({ action: { case: "subscribe", value: { cursors: opts.cursors ?? [] } } });
  }
  return session;
}

/** The HTTP status of a refused upgrade (0 if the upgrade succeeded). */
function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    sockets.push(ws);
    ws.on("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? -1);
      res.resume();
      ws.terminate();
    });
    ws.on("open", () => {
      resolve(0);
      ws.terminate();
    });
    ws.on("error", (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

async function expectInHistory(u: User, conversationId: string, acked: Event[]) {
  const history = await u.chat.getHistory({ conversationId, limit: 500 });
  expect(seqs(history.events)).toEqual(history.events.map((_, i) => i + 1));
  const ids = new Set(history.events.map((e) => e.eventId));
  for (const e of acked) expect(ids.has(e.eventId), `acked ${e.clientMsgId}`).toBe(true);
  return history.events;
}

describe("WebSocket upgrade", () => {
  it("authenticates by bearer header or access_token query; 401 without a valid token, 404 on other paths", async () => {
    server = await startServer();
    const a = await login(server, "ann", "ann-ws");

    const byHeader = await openWs(server, a.token);
    await byHeader.frames.until((f) => f.of("ready").length > 0);
    expect(byHeader.frames.of("ready")[0]).toMatchObject({ userId: "ann", deviceId: "ann-ws" });
    const byQuery = await openWs(server, a.token, { query: true });
    await byQuery.frames.until((f) => f.of("ready").length > 0);
    expect(byQuery.frames.of("ready")[0]).toMatchObject({ userId: "ann", deviceId: "ann-ws" });

    expect(await upgradeStatus(wsUrl(server))).toBe(401);
    expect(await upgradeStatus(wsUrl(server), { authorization: "Bearer not-a-token" })).toBe(401);
    expect(await upgradeStatus(`${wsUrl(server)}?access_token=not-a-token`)).toBe(401);
    // A token whose signature does not match.
    const forged = `${a.token.slice(0, -4)}AAAA`;
    expect(await upgradeStatus(wsUrl(server), { authorization: `Bearer ${forged}` })).toBe(401);
    expect(
      await upgradeStatus(wsUrl(server, "/v1/other"), { authorization: `Bearer ${a.token}` }),
    ).toBe(404);
    expect(
      await upgradeStatus(wsUrl(server, "/chat.v1.ChatService/Session"), {
        authorization: `Bearer ${a.token}`,
      }),
    ).toBe(404);
    // The accepted sockets were not disturbed by the refused ones.
    expect(byHeader.ws.readyState).toBe(WebSocket.OPEN);
    expect(byQuery.ws.readyState).toBe(WebSocket.OPEN);
  });

  it("spends the user's request budget on each upgrade: 429 past it, while another user opens freely", async () => {
    server = await startServer({ limits: { requestsPerSecond: 1, requestBurst: 3 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      statuses.push(await upgradeStatus(wsUrl(server), { authorization: `Bearer ${a.token}` }));
    }
    // The burst of 3 (login spent none: dev tokens come from DevService).
    expect(statuses.filter((s) => s === 0).length).toBeLessThanOrEqual(3);
    expect(statuses).toContain(429);
    expect(statuses.every((s) => s === 0 || s === 429)).toBe(true);
    expect(await upgradeStatus(wsUrl(server), { authorization: `Bearer ${b.token}` })).toBe(0);
  });
});

describe("WebSocket session", () => {
  it("syncs, then delivers live events and acks sends with reply_to_frame_id", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann", "ann-ws"), login(server, "ben")]);
    const id = await direct(a, b);
    await b.chat.send({ conversationId: id, clientMsgId: "early1", content: text("e1") });
    await b.chat.send({ conversationId: id, clientMsgId: "early2", content: text("e2") });
    const ben = openSession(b.chat);
    await ben.frames.synced();

    const ws = await openWs(server, a.token);
    await ws.frames.synced();
    expect(ws.frames.all[0]!.frame.case).toBe("ready");
    expect(seqs(ws.frames.of("sync").flatMap((b) => b.events))).toEqual([1, 2, 3]);

    const live = await b.chat.send({
      conversationId: id,
      clientMsgId: "live",
      content: text("live"),
    });
    await ws.frames.until((f) => f.of("event").some((e) => e.eventId === live.event!.eventId));

    ws.send({
      frameId: "w1",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "from-ws", content: text("hi") },
      },
    });
    await ws.frames.until((f) => f.of("sendAck").length > 0);
    const ackFrame = ws.frames.all.find((f) => f.frame.case === "sendAck")!;
    expect(ackFrame.replyToFrameId).toBe("w1");
    const ack = ackFrame.frame.case === "sendAck" ? ackFrame.frame.value : undefined;
    expect(ack?.duplicate).toBe(false);
    expect(ack?.event?.seq).toBe(5n);
    expect(ack?.event?.actorDeviceId).toBe("ann-ws");
    await ben.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "from-ws"));

    // A retry over the socket is acked as a duplicate of the same event.
    ws.send({
      frameId: "w2",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "from-ws", content: text("hi") },
      },
    });
    await ws.frames.until((f) => f.of("sendAck").length > 1);
    const retry = ws.frames.all.filter((f) => f.frame.case === "sendAck")[1]!;
    expect(retry.replyToFrameId).toBe("w2");
    expect(retry.frame.case === "sendAck" && retry.frame.value.duplicate).toBe(true);
    expect(retry.frame.case === "sendAck" && retry.frame.value.event?.eventId).toBe(
      ack?.event?.eventId,
    );

    // Other actions answer on the socket too.
    ws.send({ frameId: "hb", action: { case: "heartbeat", value: {} } });
    ws.send({
      frameId: "mr",
      action: { case: "markRead", value: { conversationId: id, seq: 5n } },
    });
    await ws.frames.until((f) =>
      ["hb", "mr"].every((r) => f.all.some((x) => x.replyToFrameId === r)),
    );
    expect(ws.frames.all.find((x) => x.replyToFrameId === "mr")!.frame.case).toBe("accepted");

    // Reconnecting with a cursor syncs only what came after it.
    ws.ws.close(1000);
    expect((await ws.closed).code).toBe(1000);
    await b.chat.send({ conversationId: id, clientMsgId: "while-away", content: text("w") });
    const back = await openWs(server, a.token, { query: true, cursors: [cursor(id, 5n)] });
    await back.frames.synced();
    await settle();
    expect(seqs(back.frames.events(id))).toEqual([6]);
    ben.abort();
  });

  it("delivers one conversation exactly once and in order to WebSocket and gRPC devices sending at once", async () => {
    server = await startServer({ limits: { sendBurst: 200 } });
    const annWs = await login(server, "ann", "ann-ws");
    const annGrpc = await login(server, "ann", "ann-grpc");
    const b = await login(server, "ben", "ben-grpc");
    const id = await direct(annWs, b);

    const ws = await openWs(server, annWs.token);
    const other = openSession(annGrpc.chat);
    const ben = openSession(b.chat);
    await ws.frames.synced();
    await other.frames.synced();
    await ben.frames.synced();

    const n = 20;
    for (let i = 0; i < n; i++) {
      ws.send({
        frameId: `w${i}`,
        action: {
          case: "send",
          value: { conversationId: id, clientMsgId: `w${i}`, content: text(`w${i}`) },
        },
      });
      ben.send({
        frameId: `b${i}`,
        action: {
          case: "send",
          value: { conversationId: id, clientMsgId: `b${i}`, content: text(`b${i}`) },
        },
      });
    }
    const all = Array.from({ length: 2 * n + 1 }, (_, i) => i + 1);
    await ws.frames.until((f) => f.events(id).length >= all.length, 10_000, "ws events");
    await other.frames.until(
      (f) => f.events(id).length >= all.length,
      10_000,
      "other device events",
    );
    await ben.frames.until((f) => f.events(id).length >= all.length, 10_000, "ben events");
    await settle(300);
    for (const s of [ws, other, ben]) expect(seqs(s.frames.events(id))).toEqual(all);

    // Each sender's own sends come back as acks in send order, never as events.
    const wsAcks = ws.frames.all.filter((f) => f.frame.case === "sendAck");
    expect(wsAcks.map((f) => f.replyToFrameId)).toEqual(
      Array.from({ length: n }, (_, i) => `w${i}`),
    );
    expect(ws.frames.of("event").filter((e) => e.actorDeviceId === "ann-ws")).toEqual([]);
    const order = ws.frames.events(id).filter((e) => e.clientMsgId.startsWith("w"));
    expect(order.map((e) => e.clientMsgId)).toEqual(Array.from({ length: n }, (_, i) => `w${i}`));
    // The sender's other device sees them as ordinary events.
    expect(other.frames.of("sendAck")).toEqual([]);

    await expectInHistory(b, id, ben.frames.events(id));
    other.abort();
    ben.abort();
  });
});

describe("WebSocket bad frames", () => {
  it("ends a socket that sends an undecodable binary frame with an error frame and close code 1007; others go on", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const bad = await openWs(server, a.token);
    const good = await openWs(server, b.token);
    await bad.frames.synced();
    await good.frames.synced();
    const before = await a.chat.send({
      conversationId: id,
      clientMsgId: "before",
      content: text("x"),
    });
    await bad.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "before"));

    bad.ws.send(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x07]));
    const closed = await bad.closed;
    expect(closed.code).toBe(1007);
    const last = bad.frames.all.at(-1)!;
    expect(last.frame.case).toBe("error");
    expect(last.frame.case === "error" && last.frame.value.code).toBe(Code.InvalidArgument);

    // A valid protobuf whose strings are not UTF-8 is undecodable too.
    const utf8 = await openWs(server, a.token, { subscribe: false });
    await utf8.frames.until((f) => f.of("ready").length > 0);
    // SessionRequest.frame_id (field 1) = the bytes ED A0 80 (a UTF-16 surrogate in CESU-8).
    utf8.ws.send(Buffer.from([0x0a, 0x03, 0xed, 0xa0, 0x80]));
    expect((await utf8.closed).code).toBe(1007);

    const after = await a.chat.send({
      conversationId: id,
      clientMsgId: "after",
      content: text("y"),
    });
    await good.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    good.send({
      frameId: "g",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "good", content: text("z") },
      },
    });
    await good.frames.until((f) => f.of("sendAck").length > 0);
    expect(good.ws.readyState).toBe(WebSocket.OPEN);
    await expectInHistory(b, id, [
      before.event!,
      after.event!,
      good.frames.of("sendAck")[0]!.event!,
    ]);
  });

  it("closes a socket that sends a text frame with 1007 (frames must be binary); others go on", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const bad = await openWs(server, a.token);
    const good = await openWs(server, b.token);
    await bad.frames.synced();
    await good.frames.synced();

    bad.ws.send(JSON.stringify({ subscribe: {} }));
    const closed = await bad.closed;
    expect(closed.code).toBe(1007);
    const last = bad.frames.all.at(-1)!;
    expect(last.frame.case === "error" && last.frame.value.code).toBe(Code.InvalidArgument);

    const sent = await a.chat.send({
      conversationId: id,
      clientMsgId: "after",
      content: text("y"),
    });
    await good.frames.until((f) => f.events(id).some((e) => e.eventId === sent.event!.eventId));
    expect(good.ws.readyState).toBe(WebSocket.OPEN);
  });

  it("closes a socket whose message exceeds frameMaxBytes with 1009; others go on", async () => {
    server = await startServer({ limits: { messageMaxBytes: 4096, frameMaxBytes: 8192 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const big = await openWs(server, a.token);
    const good = await openWs(server, b.token);
    await big.frames.synced();
    await good.frames.synced();

    // A send frame of exactly frameMaxBytes still fits; its text is over
    // messageMaxBytes, so the frame fails but the socket stays.
    const fits = (len: number) =>
      toBinary(
        SessionRequestSchema,
        create(SessionRequestSchema, {
          frameId: "f",
          action: {
            case: "send",
            value: { conversationId: id, clientMsgId: "big", content: text("x".repeat(len)) },
          },
        }),
      );
    let len = 8192 - 60;
    while (fits(len).length < 8192) len++;
    expect(fits(len).length).toBe(8192);
    big.ws.send(fits(len));
    await big.frames.until((f) => f.of("error").length > 0);
    expect(big.frames.of("error")[0]!.code).toBe(Code.InvalidArgument);
    expect(big.ws.readyState).toBe(WebSocket.OPEN);

    // One byte more and the socket is closed as "message too big".
    big.ws.send(fits(len + 1));
    expect((await big.closed).code).toBe(1009);

    const sent = await a.chat.send({
      conversationId: id,
      clientMsgId: "after",
      content: text("y"),
    });
    await good.frames.until((f) => f.events(id).some((e) => e.eventId === sent.event!.eventId));
    good.send({
      frameId: "g",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "good", content: text("z") },
      },
    });
    await good.frames.until((f) => f.of("sendAck").length > 0);
    const events = await expectInHistory(b, id, [
      sent.event!,
      good.frames.of("sendAck")[0]!.event!,
    ]);
    expect(events.some((e) => e.clientMsgId === "big")).toBe(false);
  });
});

describe("WebSocket shutdown", () => {
  it("ends a socket that is still sending with an UNAVAILABLE error frame and close code 4014", async () => {
    server = await startServer({ limits: { sendPerSecond: 1_000_000, sendBurst: 1_000_000 } });
    const [a, b] = await Promise.all([login(server, "ann", "ann-ws"), login(server, "ben")]);
    const conv = await direct(a, b);
    const s = await openWs(server, a.token);
    await s.frames.synced();
    // Sends stay in flight until the socket closes, so the server stops with frames unread.
    let n = 0;
    const sending = setInterval(() => {
      for (let i = 0; i < 20 && s.ws.readyState === WebSocket.OPEN; i++, n++) {
        s.send({
          frameId: `f${n}`,
          action: {
            case: "send",
            value: { conversationId: conv, clientMsgId: `m${n}`, content: text("x") },
          },
        });
      }
    }, 1);
    try {
      await s.frames.until((f) => f.of("sendAck").length >= 100, 10_000, "acks");
      await server.stop();
      const closed = await s.closed;
      expect(s.frames.of("error").at(-1)?.code).toBe(Code.Unavailable);
      expect(closed.code).toBe(4000 + Code.Unavailable);
    } finally {
      clearInterval(sending);
    }
  });
});
