import type http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ChatService, SubscribeRequestSchema } from "../../gen/chat/v1/chat_service_pb.js";
import type { ConversationCursor } from "../../gen/chat/v1/model_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import { logCallError } from "../../lib/interceptors.js";
import type { Logger } from "../../lib/logger.js";
import { codeOf, type Metrics } from "../../lib/metrics.js";
import { authenticate, bearer, type Caller, spendRequestBudget } from "./auth.js";
import type { EdgeContext } from "./context.js";
import { FramePump, type FrameWire } from "./frame-pump.js";
import type { StreamEndpoint } from "./server.js";
import { checkCursors } from "./validate.js";

/** "package.Service/Method", as metrics and logs label the call. */
const sessionProcedure = `${ChatService.typeName}/${ChatService.method.session.name}`;
const subscribeProcedure = `${ChatService.typeName}/${ChatService.method.subscribe.name}`;
const procedures = new Map([
  [`/${sessionProcedure}`, sessionProcedure],
  [`/${subscribeProcedure}`, subscribeProcedure],
]);
const grpcContentTypes = new Set(["application/grpc", "application/grpc+proto"]);
/** gRPC's length-prefixed message: a flags byte, then a 4-byte big-endian length. */
const envelopeHeader = 5;

/**
 * ChatService/Session and ChatService/Subscribe over gRPC on HTTP/2, served
 * on the bare HTTP/2 stream by the same frame pump as WebSocket sessions.
 * Connect's handler stack holds about 60 KB of generators, closures and
 * promises per open stream and Node's request/response wrappers about 3 KB
 * more, while clients keep these streams open for as long as the app runs.
 * Calls it does not claim (gRPC-Web, Connect, compressed messages, a
 * deadline) go to Connect, which serves them with the same checks: token and
 * device, request budget, stream caps, message size.
 */
export function createGrpcSessionEndpoint(
  ctx: EdgeContext,
  metrics: Metrics,
  log: Logger,
): StreamEndpoint {
  const { limits } = ctx.config;

  const budget = {
    limiter: ctx.soft.limiter,
    perSecond: limits.requestsPerSecond,
    burst: limits.requestBurst,
  };
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

  /** Starts a Subscribe call's session once its one request message is in. */
  function subscribe(call: SessionCall, who: Caller, data: Uint8Array) {
    let cursors: ConversationCursor[];
    try {
      cursors = checkCursors(fromBinary(SubscribeRequestSchema, data).cursors);
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
      const encoding = h["grpc-encoding"];
      return (
        procedures.has(h[":path"] ?? "") &&
        h[":method"] === "POST" &&
        grpcContentTypes.has(h["content-type"] ?? "") &&
        (encoding === undefined || encoding === "identity") &&
        h["grpc-timeout"] === undefined &&
        h.expect === undefined
      );
    },

    serve(stream, headers) {
      const procedure = procedures.get(headers[":path"] ?? "") ?? sessionProcedure;
      const isSubscribe = procedure === subscribeProcedure;
      metrics.streams.inc({ procedure });
      const call = new SessionCall(
        stream,
        limits.frameMaxBytes,
        isSubscribe ? subscribeEnded : sessionEnded,
      );
      if (!call.respond(headers["content-type"] ?? "application/grpc")) return;
      admit(headers).then(
        (who) =>
          isSubscribe
            ? call.readRequest((data) => subscribe(call, who, data))
            : call.start(new FramePump(ctx, call, who)),
        (err: unknown) => call.finish(toConnectError(err)),
      );
    },
  };
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
 * One Session or Subscribe call: splits the request body into messages for
 * the pump (or, for Subscribe, takes its one request message) and writes its
 * frames as gRPC messages, with the status in trailers. A bad envelope ends
 * the session; a reset stream or dropped connection ends the call as
 * CANCELLED.
 */
class SessionCall implements FrameWire {
  /** Sent once the response ends. */
  trailers: http2.OutgoingHttpHeaders | undefined;
  private pump: FramePump | undefined;
  /** A Subscribe call's request: the message once in, and who takes it at the end of input. */
  private request: { data?: Uint8Array; take(data: Uint8Array): void } | undefined;
  /** Bytes of a message still arriving. */
  private pending: Buffer | undefined;
  private listening = false;
  private failed = false;
  private ended = false;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly maxBytes: number,
    private readonly onEnded: (err: ConnectError | undefined) => void,
  ) {
    calls.set(stream, this);
    stream.on("error", ignore);
    stream.on("close", onClose);
    stream.on("wantTrailers", onWantTrailers);
  }

  /** Sends the response headers; false if the client already went away. */
  respond(contentType: string): boolean {
    try {
      this.stream.respond(
        { ":status": 200, "content-type": contentType },
        { waitForTrailers: true },
      );
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
   * Reads a Subscribe call's request: exactly one message, then the end of
   * input, which hands the message to `take`.
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
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    while (buf.length >= envelopeHeader) {
      const len = buf.readUInt32BE(1);
      if (buf[0] !== 0) {
        this.fail(fail.invalid("malformed request message: compressed without grpc-encoding"));
        return;
      }
      if (len > this.maxBytes) {
        this.fail(
          new ConnectError(
            `message size ${len} is larger than ${this.maxBytes}`,
            Code.ResourceExhausted,
          ),
        );
        return;
      }
      if (buf.length < envelopeHeader + len) break;
      const message = buf.subarray(envelopeHeader, envelopeHeader + len);
      buf = buf.subarray(envelopeHeader + len);
      if (!this.request) {
        this.pump?.receive(message);
      } else if (this.request.data) {
        this.fail(fail.invalid("Subscribe takes one request message"));
        return;
      } else {
        this.request.data = message;
      }
    }
    this.pending = buf.length > 0 ? buf : undefined;
  }

  inputEnded() {
    if (this.failed) return;
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

  /** Ends the call for bad input: through the session once there is one. */
  private fail(err: ConnectError) {
    this.failed = true;
    if (this.pump) this.pump.fail(err);
    else this.finish(err);
  }

  closed() {
    this.end(new ConnectError("stream closed by the client", Code.Canceled));
    this.pump?.closed();
  }

  get writable() {
    return !this.ended && !this.stream.destroyed;
  }

  get buffered() {
    return this.stream.writableLength;
  }

  write(bytes: Uint8Array, flushed?: (err?: Error | null) => void) {
    const out = Buffer.allocUnsafe(envelopeHeader + bytes.length);
    out[0] = 0;
    out.writeUInt32BE(bytes.length, 1);
    out.set(bytes, envelopeHeader);
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

  finish(err: ConnectError | undefined) {
    if (!this.writable) return;
    this.trailers = err
      ? { "grpc-status": String(err.code), "grpc-message": encodeURIComponent(err.rawMessage) }
      : { "grpc-status": "0" };
    this.end(err);
    this.stream.end();
  }

  private end(err: ConnectError | undefined) {
    if (this.ended) return;
    this.ended = true;
    this.onEnded(err);
  }
}
