import http2 from "node:http2";
import net from "node:net";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { SessionRequestSchema, SessionResponseSchema } from "../../gen/chat/v1/chat_service_pb.js";
import { Frames } from "./clients.js";
import { createWaiters } from "./waiters.js";

/*
 * A bare HTTP/2 gRPC client for what the Connect client will not do: write
 * malformed or oversized frames, stop reading, ignore advertised limits, or
 * put chosen calls on one connection.
 */

/** Opens an HTTP/2 connection and waits for the server's SETTINGS. */
export async function connectH2(
  url: string,
  settings: http2.Settings = {},
): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url, { settings });
  session.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    session.once("remoteSettings", () => resolve());
    session.once("error", reject);
  });
  return session;
}

/** The 5-byte gRPC length prefix followed by the message. */
export function envelope(message: Uint8Array, length = message.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(length, 1);
  return Buffer.concat([head, message]);
}

export interface GrpcOutcome {
  /** grpc-status, or undefined when the stream was reset without one. */
  code: Code | undefined;
  message: string;
  rstCode: number;
}

export interface RawCall {
  stream: http2.ClientHttp2Stream;
  frames: Frames;
  /** Raw response messages (gRPC envelopes without their prefix). */
  messages: Buffer[];
  outcome: Promise<GrpcOutcome>;
  send(frame: MessageInitShape<typeof SessionRequestSchema>): void;
  write(bytes: Uint8Array): void;
  end(): void;
}

/**
 * Starts a gRPC call on `session`. A `request` (for unary and server-stream
 * methods) is written and the request side closed. Session and Subscribe
 * responses are decoded into `frames` (SessionResponse and SubscribeResponse
 * share a wire shape); other methods only collect raw `messages`.
 */
export function rawCall(
  session: http2.ClientHttp2Session,
  path: string,
  token: string | undefined,
  request?: Uint8Array,
): RawCall {
  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
  };
  if (token) headers.authorization = `Bearer ${token}`;
  const stream = session.request(headers);
  const decodeFrames = path.endsWith("/Session") || path.endsWith("/Subscribe");
  const frames = new Frames();
  const messages: Buffer[] = [];
  let pending = Buffer.alloc(0);
  let status: { code: Code; ok: boolean; message: string } | undefined;
  const takeStatus = (h: http2.IncomingHttpHeaders) => {
    const raw = h["grpc-status"];
    if (raw === undefined || status) return;
    status = {
      code: Number(raw) as Code,
      ok: Number(raw) === 0,
      message: decodeURIComponent(String(h["grpc-message"] ?? "")),
    };
  };
  stream.on("response", takeStatus);
  stream.on("trailers", takeStatus);
  stream.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5) {
      const len = pending.readUInt32BE(1);
      if (pending.length < 5 + len) break;
      const msg = pending.subarray(5, 5 + len);
      pending = pending.subarray(5 + len);
      messages.push(msg);
      if (!decodeFrames) continue;
      const f = fromBinary(SessionResponseSchema, msg).frame;
      if (f) frames.add(f);
    }
  });
  stream.on("error", () => undefined);
  // The call is over once the response ends: the server need not reset a
  // request side the client still holds open.
  const outcome = new Promise<GrpcOutcome>((resolve) => {
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      const code = status?.code;
      const out = { code, message: status?.message ?? "", rstCode: stream.rstCode ?? 0 };
      if (code === undefined) {
        frames.end(new ConnectError(`stream reset with code ${out.rstCode}`, Code.Unknown));
      } else {
        frames.end(status?.ok ? undefined : new ConnectError(out.message, code));
      }
      // Closed on the next turn, never from inside the stream's own event: on
      // Node 20, ClientHttp2Stream.close() called synchronously in 'end', with
      // a request queued behind the server's stream limit, corrupts the heap
      // when client and server share a process (as in these tests).
      setImmediate(() => {
        if (!stream.closed) stream.close();
      });
      resolve(out);
    };
    stream.on("end", finish);
    stream.on("close", finish);
  });
  if (request) stream.end(envelope(request));
  return {
    stream,
    frames,
    messages,
    outcome,
    send: (f) =>
      stream.write(envelope(toBinary(SessionRequestSchema, create(SessionRequestSchema, f)))),
    write: (bytes) => stream.write(bytes),
    end: () => stream.end(),
  };
}

/** One HTTP/2 frame as seen on the wire. */
export interface WireFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export const frameType = {
  data: 0,
  headers: 1,
  rstStream: 3,
  settings: 4,
  ping: 6,
  goaway: 7,
  continuation: 9,
};

/**
 * HTTP/2 spoken by hand over a TCP socket, for a peer that ignores what the
 * server advertised (node:http2 itself obeys the limits).
 */
export async function rawH2(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.on("error", () => undefined);
  const received: WireFrame[] = [];
  let closed = false;
  const { poke, until: untilPoked } = createWaiters();
  const frameOf = (type: number, flags: number, streamId: number, payload: Buffer) => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    head[4] = flags;
    head.writeUInt32BE(streamId, 5);
    return Buffer.concat([head, payload]);
  };
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 9) {
      const len = pending.readUIntBE(0, 3);
      if (pending.length < 9 + len) break;
      const f: WireFrame = {
        type: pending[3]!,
        flags: pending[4]!,
        streamId: pending.readUInt32BE(5) & 0x7fffffff,
        payload: Buffer.from(pending.subarray(9, 9 + len)),
      };
      pending = pending.subarray(9 + len);
      // Acknowledge the server's SETTINGS, which puts its limits in force.
      if (f.type === frameType.settings && !(f.flags & 1)) {
        socket.write(frameOf(frameType.settings, 1, 0, Buffer.alloc(0)));
      }
      received.push(f);
    }
    poke();
  });
  socket.on("close", () => {
    closed = true;
    poke();
  });
  const until = (pred: () => boolean, timeoutMs = 5000, what = "frames") =>
    untilPoked(pred, timeoutMs, what);
  // HPACK "literal header field without indexing, new name", no Huffman.
  const int7 = (n: number) => {
    if (n < 127) return Buffer.from([n]);
    const out = [127];
    let rest = n - 127;
    while (rest >= 128) {
      out.push((rest & 127) | 128);
      rest >>= 7;
    }
    out.push(rest);
    return Buffer.from(out);
  };
  const literal = (s: string) => Buffer.concat([int7(Buffer.byteLength(s)), Buffer.from(s)]);
  const headerBlock = (headers: [string, string][]) =>
    Buffer.concat(
      headers.map(([k, v]) => Buffer.concat([Buffer.from([0]), literal(k), literal(v)])),
    );

  socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  socket.write(frameOf(frameType.settings, 0, 0, Buffer.alloc(0)));
  // A PING answered after our SETTINGS ack means the server has applied its settings.
  socket.write(frameOf(frameType.ping, 0, 0, Buffer.alloc(8)));
  await until(
    () => received.some((f) => f.type === frameType.ping && f.flags & 1),
    5000,
    "PING ack",
  );

  return {
    received,
    get closed() {
      return closed;
    },
    until,
    /** Sends a request's headers (split into CONTINUATION frames when large) and optional body. */
    request(streamId: number, headers: [string, string][], body?: Buffer) {
      const block = headerBlock(headers);
      const max = 16_384;
      const parts: Buffer[] = [];
      for (let at = 0; at < block.length; at += max) parts.push(block.subarray(at, at + max));
      parts.forEach((part, i) => {
        const endHeaders = i === parts.length - 1 ? 4 : 0;
        // END_STREAM may only be set on the HEADERS frame; CONTINUATION carries END_HEADERS.
        const flags = i === 0 ? endHeaders | (body ? 0 : 1) : endHeaders;
        socket.write(
          frameOf(i === 0 ? frameType.headers : frameType.continuation, flags, streamId, part),
        );
      });
      if (body) socket.write(frameOf(frameType.data, 1, streamId, body));
    },
    close() {
      socket.destroy();
    },
  };
}
