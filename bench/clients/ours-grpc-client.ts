import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  HeartbeatRequestSchema,
  SessionRequestSchema,
  SubscribeRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { decodeFrame, decodeSendResponse, encodeSend, encodeSendRequest } from "./ours-wire.js";

/**
 * A bench client's session as a gRPC `ChatService/Session` stream (or a
 * server-streaming `ChatService/Subscribe` call, as a client that sends
 * with unary calls holds it) on an HTTP/2 connection it shares with other
 * clients: the shape of sessions behind a proxy (Envoy multiplexes its
 * downstream clients onto a few HTTP/2 upstream connections), where one edge
 * process holds far more sessions than sockets.
 */
export interface OursStream {
  /**
   * Posts `body` as a text message: a frame on a Session stream, or a unary
   * `Send` call on the same connection beside a Subscribe call. Either way the
   * durable ack arrives through onAck.
   */
  send(conversationId: string, clientMsgId: string, body: string): void;
  heartbeat(): void;
  close(): void;
  readonly alive: boolean;
}

/** What a Session stream that carries messages reports (the idle ones report nothing). */
export interface StreamHandlers {
  /** An event delivered live (not from the subscribe's catch-up), with the message text. */
  onEvent?: (text: string) => void;
  /** The durable ack of one of this stream's sends, with the message text. */
  onAck?: (text: string) => void;
  /**
   * The stream's own user. A Subscribe call carries the events of its
   * device's unary sends too (a Session stream acks them instead); those are
   * not deliveries, so they are not reported.
   */
  self?: string;
}

const sessionPath = "/chat.v1.ChatService/Session";
const subscribePath = "/chat.v1.ChatService/Subscribe";
const heartbeatPath = "/chat.v1.ChatService/Heartbeat";
const sendPath = "/chat.v1.ChatService/Send";

/** A gRPC message: flag byte 0 (uncompressed), 4-byte big-endian length, the bytes. */
function grpcFrame(msg: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + msg.length);
  out[0] = 0;
  out.writeUInt32BE(msg.length, 1);
  out.set(msg, 5);
  return out;
}

const subscribeFrame = grpcFrame(
  toBinary(
    SessionRequestSchema,
    create(SessionRequestSchema, { action: { case: "subscribe", value: { cursors: [] } } }),
  ),
);
const heartbeatFrame = grpcFrame(
  toBinary(
    SessionRequestSchema,
    create(SessionRequestSchema, { action: { case: "heartbeat", value: {} } }),
  ),
);

const subscribeRequest = grpcFrame(
  toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { cursors: [] })),
);
const heartbeatRequest = grpcFrame(
  toBinary(HeartbeatRequestSchema, create(HeartbeatRequestSchema)),
);

/** Opens one HTTP/2 connection (prior knowledge, no TLS) for many session streams. */
export function connectHttp2(opts: {
  host: string;
  port: number;
  localAddress?: string;
}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${opts.host}:${opts.port}`, {
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      // Room for every stream's few frames without the connection window stalling.
      settings: { initialWindowSize: 1 << 20 },
    });
    session.once("connect", () => {
      session.off("error", reject);
      // A stream's error ends that stream; the connection stays up for the others.
      session.on("error", () => undefined);
      resolve(session);
    });
    session.once("error", reject);
  });
}

/** The same request in Connect's unary protocol: the bare message, no envelope. */
const connectHeartbeatRequest = Buffer.from(
  toBinary(HeartbeatRequestSchema, create(HeartbeatRequestSchema)),
);

/**
 * Starts a unary call on `session`: gRPC, or Connect's unary protocol as a
 * browser's Connect client makes it. Undefined once the connection is gone.
 */
function startUnary(
  session: http2.ClientHttp2Session,
  path: string,
  token: string,
  connect: boolean,
): http2.ClientHttp2Stream | undefined {
  if (session.closed || session.destroyed) return undefined;
  return session.request({
    ":method": "POST",
    ":path": path,
    ...(connect
      ? { "content-type": "application/proto", "connect-protocol-version": "1" }
      : { "content-type": "application/grpc+proto", te: "trailers" }),
    authorization: `Bearer ${token}`,
  });
}

/** A unary call whose answer nobody waits for (a Subscribe client's heartbeat). */
function fireUnary(
  session: http2.ClientHttp2Session,
  path: string,
  token: string,
  connect: boolean,
) {
  const call = startUnary(session, path, token, connect);
  if (!call) return;
  const body = connect ? connectHeartbeatRequest : heartbeatRequest;
  // Connect answers with the HTTP status; gRPC with grpc-status in the trailers.
  const check = (h: http2.IncomingHttpHeaders) => {
    const failed = connect
      ? h[":status"] !== undefined && Number(h[":status"]) !== 200
      : h["grpc-status"] !== undefined && h["grpc-status"] !== "0";
    if (failed) unaryFailures++;
  };
  call.on("response", check);
  if (!connect) call.on("trailers", check);
  call.on("error", () => undefined);
  call.resume();
  call.end(body);
}

/**
 * A unary `Send` call, gRPC or Connect's unary protocol, as a client that
 * cannot stream its sends makes it; its answer is the durable ack. A failed
 * call reports nothing, so its message counts as missing.
 */
function unarySend(
  session: http2.ClientHttp2Session,
  token: string,
  connect: boolean,
  request: Uint8Array,
  onAck: ((text: string) => void) | undefined,
) {
  const call = startUnary(session, sendPath, token, connect);
  if (!call) return;
  const chunks: Buffer[] = [];
  let ok = false;
  call.on("response", (h) => {
    ok = Number(h[":status"]) === 200 && (connect || h["grpc-status"] === undefined);
  });
  call.on("data", (chunk: Buffer) => chunks.push(chunk));
  call.on("end", () => {
    if (!ok || !onAck) return;
    const body = Buffer.concat(chunks);
    // gRPC wraps the one answer in a 5-byte envelope; Connect's unary answer is the bare message.
    const ack = decodeSendResponse(connect ? body : body.subarray(5));
    if (ack.case === "sendAck" && ack.event) onAck(ack.event.text);
  });
  call.on("error", () => undefined);
  call.end(connect ? request : grpcFrame(request));
}

let unaryFailures = 0;
/** Heartbeat calls answered with an error since the last reset. */
export const heartbeatFailures = () => unaryFailures;
export function resetHeartbeatFailures() {
  unaryFailures = 0;
}

/**
 * Opens a Session stream on `session` with the user's token, subscribes
 * without cursors and resolves once sync_complete arrived. With `subscribe`,
 * the call is `ChatService/Subscribe` instead, and heartbeats are unary
 * `Heartbeat` calls on the same connection; `connect-subscribe` makes both
 * calls in the Connect protocol (binary), as a browser's behind a proxy.
 */
export function openSessionStream(
  session: http2.ClientHttp2Session,
  token: string,
  timeoutMs = 30_000,
  method: "session" | "subscribe" | "connect-subscribe" = "session",
  handlers: StreamHandlers = {},
): Promise<OursStream> {
  const subscribe = method !== "session";
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ":method": "POST",
      ":path": subscribe ? subscribePath : sessionPath,
      "content-type":
        method === "connect-subscribe" ? "application/connect+proto" : "application/grpc+proto",
      te: "trailers",
      authorization: `Bearer ${token}`,
    });
    let ready = false;
    let closed = false;
    let pending: Buffer | undefined;
    const fail = (err: Error) => {
      if (ready) return;
      clearTimeout(timer);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error("session setup timed out")), timeoutMs);
    const conn: OursStream = {
      send(conversationId, clientMsgId, body) {
        if (closed) return;
        if (subscribe) {
          const request = encodeSendRequest(conversationId, clientMsgId, body);
          unarySend(session, token, method === "connect-subscribe", request, handlers.onAck);
        } else stream.write(grpcFrame(encodeSend(conversationId, clientMsgId, body)));
      },
      heartbeat() {
        if (closed) return;
        if (subscribe) fireUnary(session, heartbeatPath, token, method === "connect-subscribe");
        else stream.write(heartbeatFrame);
      },
      close() {
        if (!closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      },
      get alive() {
        return !closed;
      },
    };
    stream.on("response", (headers) => {
      const status = headers[":status"];
      if (status !== 200) fail(new Error(`session stream got HTTP ${status}`));
    });
    stream.on("data", (chunk: Buffer) => {
      let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        const flags = buf[0];
        const message = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        // A Connect end-stream message (flag 2) carries the status as JSON, not a frame.
        if (flags !== 0) continue;
        const f = decodeFrame(message);
        if (f.case === "event") {
          if (f.event.actor !== handlers.self) handlers.onEvent?.(f.event.text);
        } else if (f.case === "sendAck") {
          if (f.event) handlers.onAck?.(f.event.text);
        } else if (f.case === "syncComplete" && !ready) {
          ready = true;
          clearTimeout(timer);
          resolve(conn);
        } else if (f.case === "error") {
          fail(new Error(`session error ${f.code}: ${f.message}`));
        }
      }
      pending = buf.length > 0 ? buf : undefined;
    });
    stream.on("trailers", (trailers) => {
      const status = trailers["grpc-status"];
      if (status !== undefined && status !== "0") {
        fail(new Error(`session ended with grpc-status ${status}: ${trailers["grpc-message"]}`));
      }
    });
    stream.on("error", (err) => fail(err));
    stream.on("close", () => {
      closed = true;
      fail(new Error("session stream closed during setup"));
    });
    if (subscribe) stream.end(subscribeRequest);
    else stream.write(subscribeFrame);
  });
}
