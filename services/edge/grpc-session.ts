import type http2 from "node:http2";
import {
  create,
  type DescMessage,
  fromBinary,
  fromJsonString,
  type MessageShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamToJson,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import {
  setTrailerStatus,
  trailerFlag,
  trailerSerialize,
} from "@connectrpc/connect/protocol-grpc-web";
import {
  ChatService,
  GetHistoryRequestSchema,
  GetHistoryResponseSchema,
  HeartbeatRequestSchema,
  HeartbeatResponseSchema,
  MarkDeliveredRequestSchema,
  MarkDeliveredResponseSchema,
  MarkReadRequestSchema,
  MarkReadResponseSchema,
  SendRequestSchema,
  SendResponseSchema,
  SetTypingRequestSchema,
  SetTypingResponseSchema,
  type SubscribeRequest,
  SubscribeRequestSchema,
  SubscribeResponseSchema,
  SyncRequestSchema,
  SyncResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import type { ConversationCursor } from "../../gen/chat/v1/model_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import { logCallError } from "../../lib/interceptors.js";
import type { Logger } from "../../lib/logger.js";
import { codeOf, type Metrics } from "../../lib/metrics.js";
import { authenticate, bearer, type Caller, requestBudget, spendRequestBudget } from "./auth.js";
import { gzipCompression } from "./compression.js";
import type { EdgeContext } from "./context.js";
import { FramePump, type FrameWire } from "./frame-pump.js";
import { corsResponseHeaders, type StreamEndpoint } from "./server.js";
import { checkCursors } from "./validate.js";
import { type Dialect, decodeSendRequest, dialects, encodeSendResponse } from "./wire.js";

/** "package.Service/Method", as metrics and logs label the call. */
const procedureOf = (m: { name: string }) => `${ChatService.typeName}/${m.name}`;
const sessionProcedure = procedureOf(ChatService.method.session);
const subscribeProcedure = procedureOf(ChatService.method.subscribe);
const heartbeatProcedure = procedureOf(ChatService.method.heartbeat);
const sendProcedure = procedureOf(ChatService.method.send);
const markDeliveredProcedure = procedureOf(ChatService.method.markDelivered);
const markReadProcedure = procedureOf(ChatService.method.markRead);
const setTypingProcedure = procedureOf(ChatService.method.setTyping);
const getHistoryProcedure = procedureOf(ChatService.method.getHistory);
const syncProcedure = procedureOf(ChatService.method.sync);
/**
 * The unary methods served here, one request message and one answer each:
 * what a client holding Subscribe instead of a Session stream calls all day,
 * and the reads every client makes on opening a conversation.
 */
const unaryProcedures = new Set([
  heartbeatProcedure,
  sendProcedure,
  markDeliveredProcedure,
  markReadProcedure,
  setTypingProcedure,
  getHistoryProcedure,
  syncProcedure,
]);
/** Methods whose answers are gzipped for clients that accept it: pages of events. */
const gzipProcedures = new Set([getHistoryProcedure, syncProcedure]);
/** Answers smaller than this go uncompressed, as Connect's compressMinBytes does. */
const compressMinBytes = 1024;
/** The envelope flag of a compressed message (gRPC, gRPC-Web). */
const compressedFlag = 0b01;
const procedures = new Map(
  [sessionProcedure, subscribeProcedure, ...unaryProcedures].map((p) => [`/${p}`, p]),
);
/** Content types of Connect's unary protocol: messages are not enveloped. */
const unaryContentTypes = new Set(["application/proto", "application/json"]);
const identity = (encoding: string | string[] | undefined) =>
  encoding === undefined || encoding === "identity";
/** As Connect reads JSON: fields a newer client adds are ignored, not refused. */
const jsonRead = { ignoreUnknownFields: true };
/** gRPC's length-prefixed message: a flags byte, then a 4-byte big-endian length. */
const envelopeHeader = 5;

/**
 * ChatService/Session over gRPC, and ChatService/Subscribe over gRPC, gRPC-Web
 * or the Connect protocol (binary or JSON), on HTTP/2: served on the bare
 * HTTP/2 stream by the same frame pump as WebSocket sessions. Connect's
 * handler stack holds about 60 KB of generators, closures and promises per
 * open stream and Node's request/response wrappers about 3 KB more, while
 * clients keep these streams open for as long as the app runs (browsers reach
 * HTTP/2 through a proxy such as envoy/). The unary calls that go with a
 * Subscribe call are served here too, in every protocol: Heartbeat, which
 * keeps its session alive, and Send, MarkDelivered, MarkRead and SetTyping,
 * which carry what a Session stream's frames would (through Connect's handler
 * each cost several times the same frame on a Session stream); so are
 * GetHistory and Sync, whose answers are gzipped for clients that accept it,
 * as Connect does. Calls it does not claim (compressed messages, a
 * deadline, gRPC-Web text or JSON, other content types, HTTP/1.1) go to
 * Connect, which serves them with the same checks: token and device, request
 * budget, stream caps, message size, CORS.
 */
export function createGrpcSessionEndpoint(
  ctx: EdgeContext,
  metrics: Metrics,
  log: Logger,
): StreamEndpoint {
  const { limits } = ctx.config;
  // The same CORS answer as every other call on the edge's port.
  const corsFor = corsResponseHeaders(ctx.config.corsOrigins);

  const budget = requestBudget(ctx.soft.limiter, limits);
  async function admit(headers: http2.IncomingHttpHeaders) {
    const who = await authenticate(ctx, bearer(headers.authorization));
    // A stream spends one request token when it opens, as every call does.
    await spendRequestBudget(budget, who.userId);
    return who;
  }

  // One function per method for every call: a closure per stream would stay as long as the stream.
  const endedFor = (procedure: string) => (err: ConnectError | undefined) => {
    metrics.streams.dec({ procedure });
    metrics.rpcs.inc({ procedure, code: codeOf(err) });
    if (err) logCallError(log, { procedure }, err);
  };
  const sessionEnded = endedFor(sessionProcedure);
  const subscribeEnded = endedFor(subscribeProcedure);
  // Bound on first use, as the metrics interceptor binds them per method.
  const unaryBound = new Map<
    string,
    {
      seconds: ReturnType<Metrics["rpcSeconds"]["labels"]>;
      ok: ReturnType<Metrics["rpcs"]["labels"]>;
    }
  >();
  /** A unary call ends: its duration and outcome, as the metrics interceptor counts them. */
  const unaryEnded = (procedure: string, started: number) => {
    let bound = unaryBound.get(procedure);
    if (!bound) {
      bound = {
        seconds: metrics.rpcSeconds.labels(procedure),
        ok: metrics.rpcs.labels(procedure, "ok"),
      };
      unaryBound.set(procedure, bound);
    }
    const { seconds, ok } = bound;
    return (err: ConnectError | undefined) => {
      seconds.observe((performance.now() - started) / 1000);
      if (!err) {
        ok.inc();
        return;
      }
      metrics.rpcs.inc({ procedure, code: codeOf(err) });
      logCallError(log, { procedure }, err);
    };
  };

  /**
   * A unary method's handler: decodes the one request message (binary
   * through `decode`), runs `act` (the same action a Session stream frame or
   * Connect's handler runs; told whether the answer is binary) and answers
   * with its result, binary through `encode` or as Connect writes JSON.
   */
  function unary<I extends DescMessage, O extends DescMessage>(
    input: I,
    output: O,
    act: (who: Caller, req: MessageShape<I>, binary: boolean) => Promise<MessageShape<O>>,
    encode: (res: MessageShape<O>) => Uint8Array = (res) => toBinary(output, res),
    decode?: (bytes: Uint8Array) => MessageShape<I>,
  ) {
    return (call: SessionCall, who: Caller, data: Uint8Array) => {
      let req: MessageShape<I>;
      try {
        req = decodeRequest(input, call, data, decode);
      } catch (err) {
        call.finish(fail.invalid("malformed request message", err));
        return;
      }
      act(who, req, call.dialect !== "connect-json").then(
        (res) => {
          if (!call.writable) return;
          call.reply(
            call.dialect === "connect-json"
              ? Buffer.from(toJsonString(output, res), "utf8")
              : encode(res),
          );
        },
        (err: unknown) => call.finish(toConnectError(err)),
      );
    };
  }

  const { actions } = ctx;
  const unaryHandlers = new Map([
    [
      heartbeatProcedure,
      unary(HeartbeatRequestSchema, HeartbeatResponseSchema, async (who) => {
        await actions.heartbeat(who);
        return create(HeartbeatResponseSchema, { serverTime: timestampNow() });
      }),
    ],
    // Read by hand like a Session stream's send frame; answered once the event is
    // durable, laid out around its stored bytes.
    [
      sendProcedure,
      unary(
        SendRequestSchema,
        SendResponseSchema,
        (who, req) => actions.send(who, req),
        encodeSendResponse,
        decodeSendRequest,
      ),
    ],
    [
      markDeliveredProcedure,
      unary(MarkDeliveredRequestSchema, MarkDeliveredResponseSchema, async (who, req) => {
        const receipt = await actions.markDelivered(who, req);
        return create(MarkDeliveredResponseSchema, receipt ? { receipt } : {});
      }),
    ],
    [
      markReadProcedure,
      unary(MarkReadRequestSchema, MarkReadResponseSchema, async (who, req) => {
        const receipt = await actions.markRead(who, req);
        return create(MarkReadResponseSchema, receipt ? { receipt } : {});
      }),
    ],
    [
      setTypingProcedure,
      unary(SetTypingRequestSchema, SetTypingResponseSchema, async (who, req) => {
        await actions.setTyping(who, req);
        return create(SetTypingResponseSchema);
      }),
    ],
    // Binary answers carry the events as stored; toBinary writes them verbatim.
    [
      getHistoryProcedure,
      unary(GetHistoryRequestSchema, GetHistoryResponseSchema, (who, req, binary) =>
        actions.getHistory(who, req, binary),
      ),
    ],
    [
      syncProcedure,
      unary(SyncRequestSchema, SyncResponseSchema, (who, req, binary) =>
        actions.sync(who, req, binary),
      ),
    ],
  ]);

  /** Starts a Subscribe call's session once its one request message is in. */
  function subscribe(call: SessionCall, who: Caller, data: Uint8Array) {
    let cursors: ConversationCursor[];
    try {
      const req: SubscribeRequest = decodeRequest(SubscribeRequestSchema, call, data);
      cursors = checkCursors(req.cursors);
    } catch (err) {
      call.finish(
        toConnectError(
          err instanceof ConnectError ? err : fail.invalid("malformed request message", err),
        ),
      );
      return;
    }
    call.start(new FramePump(ctx, call, who, cursors));
  }

  return {
    claims(h) {
      const contentType = h["content-type"] ?? "";
      const procedure = procedures.get(h[":path"] ?? "");
      const dialect = dialects.get(contentType);
      if (!procedure || !dialect || h[":method"] !== "POST" || h.expect !== undefined) return false;
      const connect = dialect === "connect-proto" || dialect === "connect-json";
      // Only gRPC carries Session: browsers (gRPC-Web, Connect) cannot hold a bidi stream.
      if (procedure === sessionProcedure && dialect !== "grpc") return false;
      // In the Connect protocol a unary call has a unary content type, a streaming call a streaming one.
      if (connect && unaryContentTypes.has(contentType) !== unaryProcedures.has(procedure)) {
        return false;
      }
      if (unaryContentTypes.has(contentType)) {
        return identity(h["content-encoding"]) && h["connect-timeout-ms"] === undefined;
      }
      if (connect) {
        return identity(h["connect-content-encoding"]) && h["connect-timeout-ms"] === undefined;
      }
      return identity(h["grpc-encoding"]) && h["grpc-timeout"] === undefined;
    },

    serve(stream, headers) {
      const procedure = procedures.get(headers[":path"] ?? "") ?? sessionProcedure;
      const contentType = headers["content-type"] ?? "application/grpc";
      const unary = unaryHandlers.get(procedure);
      if (!unary) metrics.streams.inc({ procedure });
      const bare = unaryContentTypes.has(contentType);
      const call = new SessionCall(
        stream,
        dialects.get(contentType) ?? "grpc",
        bare,
        gzipProcedures.has(procedure) &&
          acceptsGzip(bare ? headers["accept-encoding"] : headers["grpc-accept-encoding"]),
        limits.frameMaxBytes,
        unary
          ? unaryEnded(procedure, performance.now())
          : procedure === subscribeProcedure
            ? subscribeEnded
            : sessionEnded,
      );
      if (!call.respond(contentType, corsFor(headers.origin) ?? {})) return;
      admit(headers).then(
        (who) => {
          if (procedure === sessionProcedure) call.start(new FramePump(ctx, call, who));
          else call.readRequest((data) => (unary ?? subscribe)(call, who, data));
        },
        (err: unknown) => call.finish(toConnectError(err)),
      );
    },
  };
}

/** Whether an accept-encoding header (HTTP's or gRPC's) lists gzip, and not with q=0. */
export function acceptsGzip(header: string | string[] | undefined): boolean {
  const value = Array.isArray(header) ? header.join(",") : header;
  if (!value) return false;
  return value.split(",").some((item) => {
    const [name, ...params] = item.split(";").map((p) => p.trim().toLowerCase());
    return name === "gzip" && !params.some((p) => /^q=0(\.0*)?$/.test(p));
  });
}

/**
 * A call's one request message, in its dialect's encoding: JSON read as
 * Connect reads it, binary through `decode` (fromBinary unless given).
 */
function decodeRequest<Desc extends DescMessage>(
  schema: Desc,
  call: SessionCall,
  data: Uint8Array,
  decode: (bytes: Uint8Array) => MessageShape<Desc> = (bytes) => fromBinary(schema, bytes),
): MessageShape<Desc> {
  return call.dialect === "connect-json"
    ? fromJsonString(schema, Buffer.from(data).toString("utf8"), jsonRead)
    : decode(data);
}

// Listeners shared by every call (the emitter is `this`), so an idle stream
// holds no closures for them; each call is found by its stream.
const calls = new WeakMap<http2.ServerHttp2Stream, SessionCall>();
function onData(this: http2.ServerHttp2Stream, chunk: Buffer) {
  calls.get(this)?.data(chunk);
}
function onEnd(this: http2.ServerHttp2Stream) {
  calls.get(this)?.inputEnded();
}
function onClose(this: http2.ServerHttp2Stream) {
  calls.get(this)?.closed();
}
function onWantTrailers(this: http2.ServerHttp2Stream) {
  this.sendTrailers(calls.get(this)?.trailers ?? { "grpc-status": String(Code.Internal) });
}
// A reset stream emits "error"; its end is handled on "close".
function ignore() {}

/**
 * One Session, Subscribe or unary call: splits the request body into
 * messages for the pump (or takes a Subscribe or unary call's one request
 * message) and writes its messages in its dialect's framing, with the status
 * in HTTP trailers (gRPC) or in a last message (gRPC-Web, Connect). A call in
 * Connect's unary protocol (`bare`) reads the whole body as its message and
 * answers once, with headers that carry the outcome, so its response waits
 * for the outcome. A bad envelope ends the session; a reset stream or dropped
 * connection ends the call as CANCELLED.
 */
class SessionCall implements FrameWire {
  /** Sent once the response ends. */
  trailers: http2.OutgoingHttpHeaders | undefined;
  private pump: FramePump | undefined;
  /** A one-message call's request: the message once in, and who takes it when input ends. */
  private request: { data?: Uint8Array; take(data: Uint8Array): void } | undefined;
  /** Bytes of a message still arriving (a bare call's whole body so far). */
  private pending: Buffer | undefined;
  /** A bare call's response content type and other headers, sent with its one answer. */
  private answerType = "";
  private answerHeaders: http2.OutgoingHttpHeaders = {};
  private listening = false;
  private failed = false;
  private ended = false;

  /**
   * @param gzip the client accepts gzip and the method's answers are worth
   *   compressing: an answer of compressMinBytes or more goes out gzipped.
   */
  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    readonly dialect: Dialect,
    private readonly bare: boolean,
    private readonly gzip: boolean,
    private readonly maxBytes: number,
    private readonly onEnded: (err: ConnectError | undefined) => void,
  ) {
    calls.set(stream, this);
    stream.on("error", ignore);
    stream.on("close", onClose);
    stream.on("wantTrailers", onWantTrailers);
  }

  /** Sends the response headers (a bare call keeps them for its answer); false if the client already went away. */
  respond(contentType: string, extra: http2.OutgoingHttpHeaders): boolean {
    if (this.bare) {
      this.answerType = contentType;
      this.answerHeaders = extra;
      return this.writable;
    }
    const headers: http2.OutgoingHttpHeaders = {
      ":status": 200,
      "content-type": contentType,
      ...extra,
    };
    // Messages carry their own compressed flag, so the encoding is named up front.
    if (this.gzip) headers["grpc-encoding"] = "gzip";
    try {
      this.stream.respond(headers, { waitForTrailers: this.dialect === "grpc" });
      return true;
    } catch (err) {
      this.end(new ConnectError("stream closed by the client", Code.Canceled, undefined, [], err));
      return false;
    }
  }

  /** Starts reading client messages into the session's pump. */
  start(pump: FramePump) {
    // The client went away while its token (or request) was checked.
    if (!this.writable) {
      pump.closed();
      return;
    }
    this.pump = pump;
    this.listen();
  }

  /**
   * Reads a Subscribe or unary call's request: exactly one message, then
   * the end of input, which hands the message to `take`.
   */
  readRequest(take: (data: Uint8Array) => void) {
    if (!this.writable) return;
    this.request = { take };
    this.listen();
  }

  private listen() {
    if (this.listening) return;
    this.listening = true;
    this.stream.on("data", onData);
    this.stream.on("end", onEnd);
  }

  data(chunk: Buffer) {
    if (this.failed || (!this.pump && !this.request)) return;
    if (this.bare) {
      const size = (this.pending?.length ?? 0) + chunk.length;
      if (size > this.maxBytes) {
        this.tooLarge(size);
        return;
      }
      this.pending = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
      return;
    }
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    while (buf.length >= envelopeHeader) {
      const len = buf.readUInt32BE(1);
      if (buf[0] !== 0) {
        this.fail(fail.invalid("malformed request message: compressed without grpc-encoding"));
        return;
      }
      if (len > this.maxBytes) {
        this.tooLarge(len);
        return;
      }
      if (buf.length < envelopeHeader + len) break;
      const message = buf.subarray(envelopeHeader, envelopeHeader + len);
      buf = buf.subarray(envelopeHeader + len);
      if (!this.request) {
        this.pump?.receive(message);
      } else if (this.request.data) {
        this.fail(fail.invalid("the call takes one request message"));
        return;
      } else {
        this.request.data = message;
      }
    }
    this.pending = buf.length > 0 ? buf : undefined;
  }

  inputEnded() {
    if (this.failed) return;
    if (this.bare && this.request) {
      const { take } = this.request;
      const body = this.pending ?? Buffer.alloc(0);
      this.request = undefined;
      this.pending = undefined;
      take(body);
      return;
    }
    if (this.pending) {
      this.fail(fail.invalid("malformed request message: truncated"));
      return;
    }
    const request = this.request;
    if (!request) {
      this.pump?.inputEnded();
      return;
    }
    this.request = undefined;
    if (request.data) request.take(request.data);
    else this.fail(fail.invalid("missing request message"));
  }

  private tooLarge(size: number) {
    this.fail(
      new ConnectError(
        `message size ${size} is larger than ${this.maxBytes}`,
        Code.ResourceExhausted,
      ),
    );
  }

  /** Ends the call for bad input: through the session once there is one. */
  private fail(err: ConnectError) {
    this.failed = true;
    if (this.pump) this.pump.fail(err);
    else this.finish(err);
  }

  closed() {
    // Every call's stream closes, most after the call ended: an error (and its stack) only for the rest.
    if (!this.ended) this.end(new ConnectError("stream closed by the client", Code.Canceled));
    this.pump?.closed();
  }

  get writable() {
    return !this.ended && !this.stream.destroyed;
  }

  get buffered() {
    return this.stream.writableLength;
  }

  write(bytes: Uint8Array, flushed?: (err?: Error | null) => void) {
    const out = envelope(0, this.dialect === "connect-json" ? asJson(bytes) : bytes);
    if (flushed) this.stream.write(out, flushed);
    else this.stream.write(out);
  }

  cork() {
    this.stream.cork();
  }

  uncork() {
    this.stream.uncork();
  }

  pause() {
    this.stream.pause();
  }

  resume() {
    this.stream.resume();
  }

  /** Answers a one-message call with its response message (gzipped if due) and ends it. */
  reply(bytes: Uint8Array) {
    if (!this.writable) return;
    if (!this.gzip || bytes.length < compressMinBytes) {
      this.answerWith(bytes, false);
      return;
    }
    gzipCompression.compress(bytes).then(
      (zipped) => this.answerWith(zipped, true),
      (err: unknown) =>
        this.finish(
          new ConnectError("compressing the answer failed", Code.Internal, undefined, [], err),
        ),
    );
  }

  private answerWith(bytes: Uint8Array, zipped: boolean) {
    if (!this.writable) return;
    if (this.bare) {
      this.answer(200, this.answerType, bytes, zipped ? { "content-encoding": "gzip" } : {});
      this.end(undefined);
      return;
    }
    this.stream.write(envelope(zipped ? compressedFlag : 0, bytes));
    this.finish(undefined);
  }

  finish(err: ConnectError | undefined) {
    if (!this.writable) return;
    if (this.bare) {
      // Connect's unary protocol: the code as an HTTP status, the error as JSON. Its
      // answer goes through reply, so ending without an error is a missing answer.
      const e = err ?? new ConnectError("the call ended without an answer", Code.Internal);
      this.answer(codeToHttpStatus(e.code), "application/json", errorToJsonBytes(e, {}));
      this.end(e);
      return;
    }
    if (this.dialect === "grpc") {
      this.trailers = err
        ? { "grpc-status": String(err.code), "grpc-message": encodeURIComponent(err.rawMessage) }
        : { "grpc-status": "0" };
    } else if (this.dialect === "grpc-web") {
      this.stream.write(
        envelope(trailerFlag, trailerSerialize(setTrailerStatus(new Headers(), err))),
      );
    } else {
      const end = JSON.stringify(endStreamToJson(new Headers(), err, undefined));
      this.stream.write(envelope(endStreamFlag, Buffer.from(end, "utf8")));
    }
    this.end(err);
    this.stream.end();
  }

  /** A bare call's one response: headers and body at once. */
  private answer(
    status: number,
    contentType: string,
    body: Uint8Array,
    extra: http2.OutgoingHttpHeaders = {},
  ) {
    try {
      this.stream.respond({
        ...this.answerHeaders,
        ...extra,
        ":status": status,
        "content-type": contentType,
        "content-length": body.length,
      });
      // Ended once the body is written, not with it: a stream ended by its last write closes
      // before that write completes, and Node 20 then builds an ERR_STREAM_DESTROYED, stack
      // and all, for every call (about 10 µs of CPU each).
      const { stream } = this;
      stream.write(body, (err) => {
        if (!err) stream.end();
      });
    } catch {
      // The client went away meanwhile; "close" ends the call.
    }
  }

  private end(err: ConnectError | undefined) {
    if (this.ended) return;
    this.ended = true;
    this.onEnded(err);
  }
}

/** A message behind its 5-byte prefix: a flags byte, then the big-endian length. */
function envelope(flags: number, bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(envelopeHeader + bytes.length);
  out[0] = flags;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, envelopeHeader);
  return out;
}

/** A SubscribeResponse as the Connect JSON codec writes it, from its binary encoding. */
function asJson(bytes: Uint8Array): Uint8Array {
  return Buffer.from(
    toJsonString(SubscribeResponseSchema, fromBinary(SubscribeResponseSchema, bytes)),
    "utf8",
  );
}
