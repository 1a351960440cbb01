import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ChatService,
  GetHistoryRequestSchema,
  GetHistoryResponseSchema,
  HeartbeatRequestSchema,
  HeartbeatResponseSchema,
  MarkDeliveredRequestSchema,
  MarkDeliveredResponseSchema,
  SendRequestSchema,
  SendResponseSchema,
  SubscribeRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { acceptsGzip, createGrpcSessionEndpoint } from "../../services/edge/grpc-session.js";
import {
  cursor,
  direct,
  login,
  openSession,
  openSubscribe,
  settle,
  type User,
} from "../helpers/clients.js";
import { sample, scrape } from "../helpers/metrics.js";
import { connectH2, envelope, rawCall } from "../helpers/raw-grpc.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await server?.destroy();
  server = undefined;
});

const sessionPath = "/chat.v1.ChatService/Session";
const subscribePath = "/chat.v1.ChatService/Subscribe";
const heartbeatPath = "/chat.v1.ChatService/Heartbeat";
const sendPath = "/chat.v1.ChatService/Send";
const historyPath = "/chat.v1.ChatService/GetHistory";

/**
 * Calls to a method that takes one request message, each breaking that
 * framing: no message, two, bytes that are no message, and a length over the
 * limit. Resolves to their outcomes in that order.
 */
function malformedCalls(
  h2: Awaited<ReturnType<typeof connectH2>>,
  path: string,
  token: string,
  request: Uint8Array,
) {
  const none = rawCall(h2, path, token);
  none.end();
  const twice = rawCall(h2, path, token);
  twice.write(envelope(request));
  twice.write(envelope(request));
  twice.end();
  const garbage = rawCall(h2, path, token, Buffer.from([0xff, 0xff, 0xff]));
  const huge = rawCall(h2, path, token);
  huge.write(envelope(Buffer.alloc(0), 1 << 30));
  return Promise.all([none, twice, garbage, huge].map((c) => c.outcome));
}
const malformedCodes = [
  Code.InvalidArgument,
  Code.InvalidArgument,
  Code.InvalidArgument,
  Code.ResourceExhausted,
];

/** Heartbeat calls as the metrics count them: by outcome, and how many were timed. */
async function heartbeatCounts(s: TestServer) {
  const text = await scrape(s);
  const p = 'procedure="chat.v1.ChatService/Heartbeat"';
  const count = (code: string) => sample(text, `chat_rpc_total{${p},code="${code}"}`);
  return {
    ok: count("ok"),
    invalid_argument: count("invalid_argument"),
    unauthenticated: count("unauthenticated"),
    resource_exhausted: count("resource_exhausted"),
    timed: sample(text, `chat_rpc_duration_seconds_count{${p}}`),
  };
}

/** ChatService for `u` over gRPC with the given transport options. */
function chatWith(s: TestServer, u: User, opts: { gzip?: boolean }) {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${u.token}`);
    return next(req);
  };
  return createClient(
    ChatService,
    createGrpcTransport({
      baseUrl: s.url,
      interceptors: [auth],
      ...(opts.gzip ? { sendCompression: compressionGzip, compressMinBytes: 0 } : {}),
    }),
  );
}

/** ChatService for `u` over HTTP/2 with a browser protocol. */
function webWith(
  s: TestServer,
  u: User,
  protocol: "grpc-web" | "connect",
  binary: boolean,
  extra: Interceptor[] = [],
) {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${u.token}`);
    return next(req);
  };
  const opts = {
    baseUrl: s.url,
    httpVersion: "2" as const,
    useBinaryFormat: binary,
    interceptors: [...extra, auth],
  };
  return createClient(
    ChatService,
    protocol === "grpc-web" ? createGrpcWebTransport(opts) : createConnectTransport(opts),
  );
}

/** A server with ann and ben in a direct chat, and cy, who is in none. */
async function pairAndStranger() {
  server = await startServer();
  const [a, b, c] = await Promise.all([
    login(server, "ann"),
    login(server, "ben"),
    login(server, "cy"),
  ]);
  return { s: server, a, b, c, id: await direct(a, b) };
}

/**
 * Makes `calls` through Connect's handler (gzip-compressed calls still go
 * there) and then on the direct path, and asserts that each gets the code
 * `expected` lists for it (undefined for OK) on both.
 */
async function expectCodesOnEitherPath(
  calls: (as: (who: User) => ReturnType<typeof chatWith>) => Promise<unknown>[],
  expected: (Code | undefined)[],
) {
  const run = (gzip: boolean) =>
    Promise.all(
      calls((who) => chatWith(server!, who, { gzip })).map((p) =>
        p.then(
          () => undefined,
          (e: unknown) => ConnectError.from(e).code,
        ),
      ),
    );
  expect(await run(true), "Connect's handler").toEqual(expected);
  expect(await run(false), "direct path").toEqual(expected);
}

describe("gRPC Session streams", () => {
  it("take the direct path only for plain gRPC; gRPC-Web, Connect, compression, deadlines and Expect go to Connect", () => {
    const endpoint = createGrpcSessionEndpoint(
      { config: { limits: {}, corsOrigins: [] }, soft: {} } as never,
      {} as never,
      {} as never,
    );
    const claims = (headers: Record<string, string>, path = sessionPath, method = "POST") =>
      endpoint.claims({ ":path": path, ":method": method, ...headers });
    const grpc = { "content-type": "application/grpc" };
    expect(claims(grpc)).toBe(true);
    expect(claims({ "content-type": "application/grpc+proto" })).toBe(true);
    expect(claims({ ...grpc, "grpc-encoding": "identity" })).toBe(true);
    expect(claims({ ...grpc, "grpc-encoding": "gzip" })).toBe(false);
    expect(claims({ ...grpc, "grpc-timeout": "10S" })).toBe(false);
    expect(claims({ ...grpc, expect: "100-continue" })).toBe(false);
    expect(claims({ "content-type": "application/grpc-web" })).toBe(false);
    expect(claims({ "content-type": "application/grpc+json" })).toBe(false);
    expect(claims(grpc, "/chat.v1.ChatService/Subscribe")).toBe(true);
    expect(claims({ ...grpc, "grpc-timeout": "10S" }, "/chat.v1.ChatService/Subscribe")).toBe(
      false,
    );
    // Browser protocols over HTTP/2 (behind a proxy): Subscribe only, uncompressed, no deadline.
    for (const ct of [
      "application/grpc-web",
      "application/grpc-web+proto",
      "application/connect+proto",
      "application/connect+json",
    ]) {
      expect(claims({ "content-type": ct }, subscribePath), ct).toBe(true);
      expect(claims({ "content-type": ct }, sessionPath), ct).toBe(false);
    }
    const connect = { "content-type": "application/connect+proto" };
    expect(claims({ ...connect, "connect-timeout-ms": "1000" }, subscribePath)).toBe(false);
    expect(claims({ ...connect, "connect-content-encoding": "gzip" }, subscribePath)).toBe(false);
    expect(claims({ "content-type": "application/grpc-web-text" }, subscribePath)).toBe(false);
    expect(claims({ "content-type": "application/grpc-web+json" }, subscribePath)).toBe(false);
    expect(claims(grpc, sessionPath, "GET")).toBe(false);
    // Unary Heartbeat in gRPC, gRPC-Web and Connect's unary protocol (bare messages).
    expect(claims(grpc, heartbeatPath)).toBe(true);
    expect(claims({ "content-type": "application/grpc-web+proto" }, heartbeatPath)).toBe(true);
    expect(claims({ ...grpc, "grpc-timeout": "10S" }, heartbeatPath)).toBe(false);
    expect(claims({ ...grpc, "grpc-encoding": "gzip" }, heartbeatPath)).toBe(false);
    const unary = { "content-type": "application/proto" };
    expect(claims(unary, heartbeatPath)).toBe(true);
    expect(claims({ "content-type": "application/json" }, heartbeatPath)).toBe(true);
    expect(claims({ ...unary, "content-encoding": "gzip" }, heartbeatPath)).toBe(false);
    expect(claims({ ...unary, "connect-timeout-ms": "1000" }, heartbeatPath)).toBe(false);
    expect(claims({ "content-type": "application/json; charset=utf-8" }, heartbeatPath)).toBe(
      false,
    );
    // A unary content type on a streaming method, or the reverse, is Connect's to refuse.
    expect(claims({ "content-type": "application/connect+proto" }, heartbeatPath)).toBe(false);
    expect(claims(unary, subscribePath)).toBe(false);
    expect(claims({ "content-type": "application/json" }, sessionPath)).toBe(false);
    // Unary Send, the other call a Subscribe client makes all day, the same way.
    expect(claims(grpc, sendPath)).toBe(true);
    expect(claims({ "content-type": "application/grpc-web+proto" }, sendPath)).toBe(true);
    expect(claims(unary, sendPath)).toBe(true);
    expect(claims({ "content-type": "application/json" }, sendPath)).toBe(true);
    expect(claims({ "content-type": "application/connect+proto" }, sendPath)).toBe(false);
    expect(claims({ ...grpc, "grpc-timeout": "10S" }, sendPath)).toBe(false);
    expect(claims({ ...unary, "content-encoding": "gzip" }, sendPath)).toBe(false);
    // And the receipts and typing such a client sends; other unary calls stay Connect's.
    for (const method of ["MarkDelivered", "MarkRead", "SetTyping"]) {
      const path = `/chat.v1.ChatService/${method}`;
      expect(claims(grpc, path), method).toBe(true);
      expect(claims(unary, path), method).toBe(true);
      expect(claims({ "content-type": "application/json" }, path), method).toBe(true);
    }
    // And the reads every client makes on opening a conversation; other unary calls stay Connect's.
    for (const path of [historyPath, "/chat.v1.ChatService/Sync"]) {
      expect(claims(grpc, path), path).toBe(true);
      expect(claims({ "content-type": "application/grpc-web+proto" }, path), path).toBe(true);
      expect(claims(unary, path), path).toBe(true);
      expect(claims({ "content-type": "application/json" }, path), path).toBe(true);
      expect(claims({ ...grpc, "grpc-accept-encoding": "gzip" }, path), path).toBe(true);
      expect(claims({ ...grpc, "grpc-encoding": "gzip" }, path), path).toBe(false);
    }
    expect(claims(unary, "/chat.v1.ChatService/ListConversations")).toBe(false);
    // Their answers are gzipped for a client whose accept header lists gzip (not at q=0).
    expect(acceptsGzip("gzip")).toBe(true);
    expect(acceptsGzip("identity, GZIP;q=0.5, br")).toBe(true);
    expect(acceptsGzip(["br", "gzip"])).toBe(true);
    expect(acceptsGzip("gzip;q=0, br")).toBe(false);
    expect(acceptsGzip("br, deflate")).toBe(false);
    expect(acceptsGzip(undefined)).toBe(false);
  });

  it.each([
    ["plain gRPC (direct path)", {}, {}],
    ["gzip-compressed messages (Connect's handler)", { gzip: true }, {}],
    ["a deadline (Connect's handler)", {}, { timeoutMs: 60_000 }],
  ])(
    "behave the same with %s: sync, acked sends, delivery, graceful half-close",
    async (_name, transportOpts, callOpts) => {
      server = await startServer();
      const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
      const id = await direct(a, b);
      const ben = openSession(b.chat);
      const ann = openSession(chatWith(server, a, transportOpts), { call: callOpts });
      await Promise.all([ann.frames.synced(), ben.frames.synced()]);

      ann.send({
        frameId: "f1",
        action: {
          case: "send",
          value: { conversationId: id, clientMsgId: "m1", content: { text: "hi" } },
        },
      });
      // Half-closed at once: the send in flight is still answered before the stream ends.
      ann.end();
      await ann.frames.untilEnded();
      expect(ann.frames.error).toBeUndefined();
      const ack = ann.frames.all.find((f) => f.frame.case === "sendAck");
      expect(ack?.replyToFrameId).toBe("f1");
      await ben.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "m1"));
      ben.abort();
    },
  );

  it("end with UNAUTHENTICATED without a valid token, counted by outcome", async () => {
    server = await startServer();
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const none = rawCall(h2, sessionPath, undefined);
    const bad = rawCall(h2, sessionPath, "not-a-token");
    expect((await none.outcome).code).toBe(Code.Unauthenticated);
    expect((await bad.outcome).code).toBe(Code.Unauthenticated);
    const text = await scrape(server);
    const p = 'procedure="chat.v1.ChatService/Session"';
    expect(sample(text, `chat_rpc_total{${p},code="unauthenticated"}`)).toBe(2);
    expect(sample(text, `chat_rpc_streams_open{${p}}`)).toBe(0);
  });

  it("end only the stream that sends a compressed message without grpc-encoding, with INVALID_ARGUMENT", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const bad = rawCall(h2, sessionPath, a.token);
    const good = rawCall(h2, sessionPath, b.token);
    bad.send({ action: { case: "subscribe", value: {} } });
    good.send({ action: { case: "subscribe", value: {} } });
    await Promise.all([bad.frames.synced(), good.frames.synced()]);

    const flagged = envelope(Buffer.from([0x0a, 0x00]));
    flagged[0] = 1;
    bad.write(flagged);
    const outcome = await bad.outcome;
    expect(outcome.code).toBe(Code.InvalidArgument);
    expect(outcome.message).toContain("compressed");

    // The other stream on the same connection still gets events.
    await a.chat.send({ conversationId: id, clientMsgId: "after", content: { text: "x" } });
    await good.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    expect(good.frames.ended).toBe(false);
    good.end();
  });

  it("end only the stream whose frame cannot be encoded, with INTERNAL; the process and other streams go on", async () => {
    server = await startServer({ limits: { streamsPerDevice: 1 } });
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const ben = openSession(b.chat);
    await ben.frames.synced();

    // Past config validation, a value no uint32 holds: each new stream's ready frame fails to encode.
    const { session } = server.config;
    const interval = session.heartbeatIntervalMs;
    session.heartbeatIntervalMs = interval + 0.5;
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const broken = rawCall(h2, sessionPath, a.token);
    broken.send({ action: { case: "subscribe", value: {} } });
    expect((await broken.outcome).code).toBe(Code.Internal);
    expect(broken.frames.all).toEqual([]);
    const subscribe = rawCall(
      h2,
      subscribePath,
      a.token,
      toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema)),
    );
    expect((await subscribe.outcome).code).toBe(Code.Internal);
    session.heartbeatIntervalMs = interval;

    // The open stream carries on, and the failed ones gave back the device's one stream slot.
    await a.chat.send({ conversationId: id, clientMsgId: "after", content: { text: "x" } });
    await ben.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    const again = rawCall(h2, sessionPath, a.token);
    again.send({ action: { case: "subscribe", value: { cursors: [cursor(id, 0n)] } } });
    await again.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    expect(ben.frames.ended).toBe(false);
    again.end();
    ben.abort();
  });

  it("serve Subscribe on the direct path too: one request message, and a bad one ends only its own call", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const request = (conversationId?: string) =>
      toBinary(
        SubscribeRequestSchema,
        create(SubscribeRequestSchema, {
          cursors: conversationId === undefined ? [] : [{ conversationId, seq: 0n }],
        }),
      );
    const good = rawCall(h2, subscribePath, b.token, request());
    await good.frames.synced();

    const [outcomes, badCursor] = await Promise.all([
      malformedCalls(h2, subscribePath, a.token, request()),
      rawCall(h2, subscribePath, a.token, request("not a conversation id!")).outcome,
    ]);
    expect(outcomes.map((o) => o.code)).toEqual(malformedCodes);
    expect(outcomes[0]!.message).toContain("missing request message");
    expect(outcomes[1]!.message).toContain("one request message");
    expect(outcomes[2]!.message).toContain("malformed request message");
    expect(badCursor.code).toBe(Code.InvalidArgument);

    // The good call on the same connection still gets live events.
    await a.chat.send({ conversationId: id, clientMsgId: "after", content: { text: "x" } });
    await good.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    expect(good.frames.ended).toBe(false);

    const text = await scrape(server);
    const p = 'procedure="chat.v1.ChatService/Subscribe"';
    expect(sample(text, `chat_rpc_total{${p},code="invalid_argument"}`)).toBe(4);
    expect(sample(text, `chat_rpc_total{${p},code="resource_exhausted"}`)).toBe(1);
    expect(sample(text, `chat_rpc_streams_open{${p}}`)).toBe(1);
    good.stream.close();
    await good.outcome;
  });

  it("serve unary Heartbeat on the direct path: the server's time, precise codes for bad calls, every protocol answered", async () => {
    server = await startServer();
    const a = await login(server, "ann");
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const request = toBinary(HeartbeatRequestSchema, create(HeartbeatRequestSchema));
    const before = Date.now();
    const ok = rawCall(h2, heartbeatPath, a.token, request);
    expect((await ok.outcome).code).toBe(0);
    expect(ok.messages).toHaveLength(1);
    const serverMs =
      Number(fromBinary(HeartbeatResponseSchema, ok.messages[0]!).serverTime?.seconds) * 1000;
    expect(serverMs).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(serverMs).toBeLessThanOrEqual(Date.now());

    const [outcomes, stranger] = await Promise.all([
      malformedCalls(h2, heartbeatPath, a.token, request),
      rawCall(h2, heartbeatPath, "not-a-token", request).outcome,
    ]);
    expect(outcomes.map((o) => o.code)).toEqual(malformedCodes);
    expect(outcomes[1]!.message).toContain("one request message");
    expect(stranger.code).toBe(Code.Unauthenticated);

    // gRPC-Web and Connect's unary protocol, binary and JSON, as browser clients call it.
    for (const [protocol, binary] of [
      ["grpc-web", true],
      ["connect", true],
      ["connect", false],
    ] as const) {
      const res = await webWith(server, a, protocol, binary).heartbeat({});
      expect(res.serverTime, `${protocol} ${binary}`).toBeDefined();
    }

    expect(await heartbeatCounts(server)).toEqual({
      ok: 4,
      invalid_argument: 3,
      unauthenticated: 1,
      resource_exhausted: 1,
      timed: 9,
    });
  });

  it("serve unary Send on the direct path: the durable event, a retry's original, Connect's codes for bad sends, every protocol answered", async () => {
    const { s, a, b, c, id } = await pairAndStranger();
    const ben = openSession(b.chat);
    await ben.frames.synced();
    const h2 = await connectH2(s.url);
    cleanups.push(() => h2.destroy());
    const request = (clientMsgId: string) =>
      toBinary(
        SendRequestSchema,
        create(SendRequestSchema, { conversationId: id, clientMsgId, content: { text: "hi" } }),
      );

    const first = rawCall(h2, sendPath, a.token, request("m1"));
    expect((await first.outcome).code).toBe(0);
    const sent = fromBinary(SendResponseSchema, first.messages[0]!);
    expect(sent.duplicate).toBe(false);
    expect(sent.event?.clientMsgId).toBe("m1");
    expect(sent.event?.actorUserId).toBe(a.userId);
    // A retry gets the original event back, marked as such.
    const retry = rawCall(h2, sendPath, a.token, request("m1"));
    expect((await retry.outcome).code).toBe(0);
    const again = fromBinary(SendResponseSchema, retry.messages[0]!);
    expect(again.duplicate).toBe(true);
    expect(again.event).toEqual(sent.event);

    // Bad sends get the codes Connect's handler gives them (a compressed call still goes there).
    const bad = [
      [a, { conversationId: id, clientMsgId: "", content: { text: "x" } }],
      [a, { conversationId: id, clientMsgId: "m2", content: { text: "x".repeat(70_000) } }],
      [
        a,
        {
          conversationId: "c_01kbmabcdefghjkmnpqrstvwxy",
          clientMsgId: "m3",
          content: { text: "x" },
        },
      ],
      [c, { conversationId: id, clientMsgId: "m4", content: { text: "x" } }],
    ] as const;
    await expectCodesOnEitherPath(
      (as) => bad.map(([who, req]) => as(who).send(req)),
      [Code.InvalidArgument, Code.InvalidArgument, Code.NotFound, Code.PermissionDenied],
    );
    const outcomes = await malformedCalls(h2, sendPath, a.token, request("m5"));
    expect(outcomes.map((o) => o.code)).toEqual(malformedCodes);
    expect((await rawCall(h2, sendPath, "not-a-token", request("m6")).outcome).code).toBe(
      Code.Unauthenticated,
    );

    // gRPC-Web and Connect's unary protocol, binary and JSON, as browser clients send.
    const web = [
      ["grpc-web", true],
      ["connect", true],
      ["connect", false],
    ] as const;
    for (const [protocol, binary] of web) {
      const clientMsgId = `w-${protocol}-${binary}`;
      const res = await webWith(s, a, protocol, binary).send({
        conversationId: id,
        clientMsgId,
        content: { text: "w" },
      });
      expect(res.event?.clientMsgId, clientMsgId).toBe(clientMsgId);
      expect(res.duplicate).toBe(false);
    }
    // Nothing refused was stored: ben got exactly the four good sends, in order.
    const posted = () => ben.frames.events(id).filter((e) => e.kind.case === "messagePosted");
    await ben.frames.until(() => posted().length >= 4);
    await settle();
    expect(posted().map((e) => e.clientMsgId)).toEqual([
      "m1",
      ...web.map(([p, bin]) => `w-${p}-${bin}`),
    ]);
    ben.abort();

    const text = await scrape(s);
    const p = 'procedure="chat.v1.ChatService/Send"';
    expect(sample(text, `chat_rpc_total{${p},code="ok"}`)).toBe(5);
    expect(sample(text, `chat_rpc_total{${p},code="unauthenticated"}`)).toBe(1);
  });

  it("serve GetHistory and Sync on the direct path: Connect's answers, gzipped for clients that accept it, Connect's codes for bad reads", async () => {
    const { s, a, b, c, id } = await pairAndStranger();
    // Pages from well under compressMinBytes to past the synchronous gzip size.
    await a.chat.send({ conversationId: id, clientMsgId: "short", content: { text: "hi" } });
    for (let i = 0; i < 40; i++) {
      const text = `m${i} ${"lorem ipsum ".repeat(90)}`;
      await a.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: { text } });
    }
    /** Answers with the encoding each came in: grpc-encoding, else content-encoding. */
    const encodings: (string | null)[] = [];
    const seen: Interceptor = (next) => async (req) => {
      const res = await next(req);
      encodings.push(res.header.get("grpc-encoding") ?? res.header.get("content-encoding"));
      return res;
    };
    const read = async (chat: ReturnType<typeof chatWith>) => ({
      pages: [
        await chat.getHistory({ conversationId: id, limit: 1, anchorSeq: 3n }),
        await chat.getHistory({ conversationId: id, limit: 5 }),
        await chat.getHistory({ conversationId: id, limit: 100 }),
      ],
      sync: await chat.sync({ cursors: [cursor(id, 1n)] }),
    });
    // Through Connect's handler (a gzip-compressed call still goes there), then on the direct path.
    const reference = await read(chatWith(s, b, { gzip: true }));
    expect(reference.pages[2]!.events).toHaveLength(42);
    encodings.length = 0;
    /** gRPC on the direct path; `acceptGzip` false clears grpc-accept-encoding. */
    const h2 = (acceptGzip: boolean) =>
      createClient(
        ChatService,
        createGrpcTransport({
          baseUrl: s.url,
          interceptors: [
            seen,
            (next) => (req) => {
              req.header.set("authorization", `Bearer ${b.token}`);
              return next(req);
            },
          ],
          ...(acceptGzip ? {} : { acceptCompression: [] }),
        }),
      );
    expect(await read(h2(true))).toStrictEqual(reference);
    expect(encodings).toEqual(["gzip", "gzip", "gzip", "gzip"]);
    encodings.length = 0;
    expect(await read(h2(false))).toStrictEqual(reference);
    expect(encodings).toEqual([null, null, null, null]);
    // Browser protocols: gRPC-Web, and Connect's unary protocol in binary and JSON.
    for (const [protocol, binary] of [
      ["grpc-web", true],
      ["connect", true],
      ["connect", false],
    ] as const) {
      encodings.length = 0;
      const web = webWith(s, b, protocol, binary, [seen]);
      const answers = await read(web);
      expect(answers, `${protocol} ${binary}`).toStrictEqual(reference);
      if (protocol === "connect") {
        // A bare answer names its encoding only when it is compressed (1 KB or more).
        expect(encodings.slice(1)).toEqual(["gzip", "gzip", "gzip"]);
      }
    }

    // Bad reads get the codes Connect's handler gives them.
    await expectCodesOnEitherPath(
      (as) => [
        as(b).getHistory({ conversationId: "nope" }),
        as(b).getHistory({ conversationId: id, limit: 501 }),
        as(b).getHistory({ conversationId: id, anchorSeq: 99n, direction: 1 }),
        as(b).getHistory({ conversationId: "c_01kbmabcdefghjkmnpqrstvwxy" }),
        as(c).getHistory({ conversationId: id }),
        as(b).sync({ cursors: [cursor(id, 99n)] }),
        as(b).sync({ cursors: [cursor(id, 1n)], limitPerConversation: 1001 }),
      ],
      [
        Code.InvalidArgument,
        Code.InvalidArgument,
        Code.InvalidArgument,
        Code.NotFound,
        Code.PermissionDenied,
        Code.InvalidArgument,
        Code.InvalidArgument,
      ],
    );
    const conn = await connectH2(s.url);
    cleanups.push(() => conn.destroy());
    const request = toBinary(
      GetHistoryRequestSchema,
      create(GetHistoryRequestSchema, { conversationId: id }),
    );
    const outcomes = await malformedCalls(conn, historyPath, b.token, request);
    expect(outcomes.map((o) => o.code)).toEqual(malformedCodes);
    const ok = rawCall(conn, historyPath, b.token, request);
    expect((await ok.outcome).code).toBe(0);
    // A page of the default size (50): all 42 events, as the limit-100 page has them.
    expect(fromBinary(GetHistoryResponseSchema, ok.messages[0]!).events).toStrictEqual(
      reference.pages[2]!.events,
    );
    expect((await rawCall(conn, historyPath, "not-a-token", request).outcome).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("serve unary MarkDelivered, MarkRead and SetTyping on the direct path: receipts and typing reach the peer, bad calls get Connect's codes", async () => {
    const { s, a, b, c, id } = await pairAndStranger();
    for (const m of ["m1", "m2", "m3"]) {
      await a.chat.send({ conversationId: id, clientMsgId: m, content: { text: m } });
    }
    const ann = openSession(a.chat);
    await ann.frames.synced();
    const h2 = await connectH2(s.url);
    cleanups.push(() => h2.destroy());

    // gRPC on the bare stream: the receipt in the answer, and at the peer.
    const delivered = rawCall(
      h2,
      "/chat.v1.ChatService/MarkDelivered",
      b.token,
      toBinary(
        MarkDeliveredRequestSchema,
        create(MarkDeliveredRequestSchema, { conversationId: id, seq: 3n }),
      ),
    );
    expect((await delivered.outcome).code).toBe(0);
    const receipt = fromBinary(MarkDeliveredResponseSchema, delivered.messages[0]!).receipt;
    expect([receipt?.userId, receipt?.deliveredSeq]).toEqual([b.userId, 3n]);
    // Connect's unary protocol, JSON and binary, as a browser's client calls.
    const read = await webWith(s, b, "connect", false).markRead({
      conversationId: id,
      seq: 2n,
    });
    expect([read.receipt?.userId, read.receipt?.readSeq]).toEqual([b.userId, 2n]);
    await webWith(s, b, "connect", true).setTyping({ conversationId: id, typing: true });
    await ann.frames.until(
      (f) =>
        f.of("receipt").some((r) => r.userId === b.userId && r.readSeq === 2n) &&
        f.of("typing").some((t) => t.userId === b.userId && t.typing),
    );
    expect(ann.frames.of("receipt").some((r) => r.deliveredSeq === 3n)).toBe(true);
    ann.abort();

    // Bad calls: the codes Connect's handler gives them (a compressed call still goes there).
    await expectCodesOnEitherPath(
      (as) => [
        as(b).markRead({ conversationId: id, seq: 99n }),
        as(b).markDelivered({ conversationId: "not an id", seq: 1n }),
        as(c).markRead({ conversationId: id, seq: 1n }),
        as(c).setTyping({ conversationId: id, typing: true }),
      ],
      [Code.InvalidArgument, Code.InvalidArgument, Code.PermissionDenied, Code.PermissionDenied],
    );

    const text = await scrape(s);
    const ok = (method: string) =>
      sample(text, `chat_rpc_total{procedure="chat.v1.ChatService/${method}",code="ok"}`);
    expect([ok("MarkDelivered"), ok("MarkRead"), ok("SetTyping")]).toEqual([1, 1, 1]);
  });

  it("serve Connect-protocol unary Heartbeat with bare messages: errors as an HTTP status and JSON, as Connect answers them", async () => {
    server = await startServer({ corsOrigins: ["https://app.example"] });
    const a = await login(server, "ann");
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    /** One unary call: its HTTP status, headers and body. */
    const call = (contentType: string, body: Uint8Array | string, token?: string) =>
      new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>(
        (resolve, reject) => {
          const req = h2.request({
            ":method": "POST",
            ":path": heartbeatPath,
            "content-type": contentType,
            "connect-protocol-version": "1",
            origin: "https://app.example",
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          });
          const chunks: Buffer[] = [];
          let headers: Record<string, unknown> = {};
          req.on("response", (h) => {
            headers = h;
          });
          req.on("data", (c: Buffer) => chunks.push(c));
          req.on("end", () =>
            resolve({ status: Number(headers[":status"]), headers, body: Buffer.concat(chunks) }),
          );
          req.on("error", reject);
          req.end(body);
        },
      );
    const errorOf = (r: { headers: Record<string, unknown>; body: Buffer }) => {
      expect(r.headers["content-type"]).toBe("application/json");
      return JSON.parse(r.body.toString("utf8")) as { code: string; message: string };
    };

    const json = await call("application/json", "{}", a.token);
    expect(json.status).toBe(200);
    expect(json.headers["content-type"]).toBe("application/json");
    expect(json.headers["access-control-allow-origin"]).toBe("https://app.example");
    const serverTime = (JSON.parse(json.body.toString("utf8")) as { serverTime: string })
      .serverTime;
    expect(Math.abs(Date.parse(serverTime) - Date.now())).toBeLessThan(60_000);
    // An empty body is an empty binary message.
    const proto = await call("application/proto", new Uint8Array(0), a.token);
    expect(proto.status).toBe(200);
    expect(proto.headers["content-type"]).toBe("application/proto");
    expect(fromBinary(HeartbeatResponseSchema, proto.body).serverTime).toBeDefined();

    const garbage = await call("application/json", "{not json", a.token);
    expect(garbage.status).toBe(400);
    expect(errorOf(garbage).code).toBe("invalid_argument");
    const notAnObject = await call("application/json", "[1]", a.token);
    expect(errorOf(notAnObject).code).toBe("invalid_argument");
    // As Connect reads JSON: a field this server does not know (a newer client's) is ignored.
    expect((await call("application/json", '{"noSuchField":1}', a.token)).status).toBe(200);
    const stranger = await call("application/json", "{}", "not-a-token");
    expect(stranger.status).toBe(401);
    expect(errorOf(stranger).code).toBe("unauthenticated");
    expect(errorOf(await call("application/json", "{}")).code).toBe("unauthenticated");
    const huge = await call("application/proto", Buffer.alloc(200 * 1024), a.token);
    expect(huge.status).toBe(429);
    expect(errorOf(huge).code).toBe("resource_exhausted");

    expect(await heartbeatCounts(server)).toEqual({
      ok: 3,
      invalid_argument: 2,
      unauthenticated: 2,
      resource_exhausted: 1,
      timed: 8,
    });
  });

  it.each([
    ["gRPC-Web", "grpc-web", true],
    ["Connect, binary", "connect", true],
    ["Connect, JSON", "connect", false],
  ] as const)(
    "serve %s Subscribe calls on HTTP/2 on the direct path too: sync, live events, errors as the protocol carries them",
    async (_name, protocol, binary) => {
      server = await startServer();
      const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
      const id = await direct(a, b);
      const web = webWith(server, b, protocol, binary);
      const sub = openSubscribe(web);
      await sub.frames.synced();
      await a.chat.send({ conversationId: id, clientMsgId: "m1", content: { text: "hi" } });
      await sub.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "m1"));

      const bad = openSubscribe(web, [cursor("not a conversation id!", 0n)]);
      await bad.frames.untilEnded();
      expect(bad.frames.error?.code).toBe(Code.InvalidArgument);
      const stranger = openSubscribe(
        webWith(server, { ...b, token: "not-a-token" }, protocol, binary),
      );
      await stranger.frames.untilEnded();
      expect(stranger.frames.error?.code).toBe(Code.Unauthenticated);

      // A server that stops ends the open call with UNAVAILABLE, in the protocol's own way.
      const stopping = server.stop();
      await sub.frames.untilEnded();
      expect(sub.frames.error?.code).toBe(Code.Unavailable);
      await stopping;
    },
  );

  it("answer an allowed browser origin with the same CORS headers as Connect's path", async () => {
    server = await startServer({ corsOrigins: ["https://app.example"] });
    const b = await login(server, "ben");
    const h2 = await connectH2(server.url);
    cleanups.push(() => h2.destroy());
    const headersFor = (origin: string) =>
      new Promise<Record<string, unknown>>((resolve) => {
        const req = h2.request({
          ":method": "POST",
          ":path": subscribePath,
          "content-type": "application/connect+proto",
          authorization: `Bearer ${b.token}`,
          origin,
        });
        req.on("response", (h) => {
          resolve(h);
          req.close();
        });
        req.on("error", () => undefined);
        req.end(envelope(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema))));
      });
    const allowed = await headersFor("https://app.example");
    expect(allowed["access-control-allow-origin"]).toBe("https://app.example");
    expect(String(allowed["access-control-expose-headers"])).toContain("Grpc-Status");
    const other = await headersFor("https://evil.example");
    expect(other["access-control-allow-origin"]).toBeUndefined();
  });
});
