import type http from "node:http";
import type net from "node:net";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type WebSocket, WebSocketServer } from "ws";
import { type SessionRequest, SessionRequestSchema } from "../../gen/chat/v1/chat_service_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import { authenticate, bearer, type Caller } from "./auth.js";
import type { EdgeContext } from "./context.js";
import { FrameRunner } from "./duplex.js";
import { frame, type Session } from "./session.js";
import { encodeSessionResponse as encode } from "./wire.js";

/** The WebSocket endpoint: binary protobuf SessionRequest in, SessionResponse out. */
export const websocketPath = "/v1/ws";

/** Bytes queued on a socket beyond which the writer waits for it to drain. */
const writeHighWater = 64 * 1024;

/**
 * Session over WebSocket, for clients that prefer it to gRPC streams. The
 * token comes in the `authorization` header or, for browsers, the
 * `access_token` query parameter. Oversized messages close the socket with
 * 1009; undecodable ones with 1007; a session error with 4000 + its gRPC code.
 */
export function createWebSocketEndpoint(ctx: EdgeContext) {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: ctx.config.limits.frameMaxBytes,
    perMessageDeflate: false,
  });

  const reject = (socket: net.Socket, status: number, text: string) => {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  };

  return {
    async upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer) {
      const url = new URL(req.url ?? "/", "http://edge");
      if (url.pathname !== websocketPath) return reject(socket, 404, "Not Found");
      let who: Caller;
      try {
        const token =
          bearer(req.headers.authorization) ?? url.searchParams.get("access_token") ?? undefined;
        who = await authenticate(ctx, token);
      } catch {
        return reject(socket, 401, "Unauthorized");
      }
      wss.handleUpgrade(req, socket, head, (ws) => new SocketSession(ctx, ws, socket, who));
    },
    close() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}

/**
 * Serves one socket without async iterators or abort signals, which an idle
 * session would otherwise hold: frames go out as the session queues them,
 * requests run as messages arrive. A class, so idle sockets share its methods.
 */
class SocketSession {
  private s: Session | undefined;
  private runner: FrameRunner | undefined;
  /** Messages that arrive while the session opens, before it can take them. */
  private early: [Buffer, boolean][] | undefined = [];
  private congested = false;
  private writing = false;
  private finished = false;
  // Bound once: handed to the session at every wait for frames.
  private readonly scheduleWrite = this.onReadable.bind(this);

  constructor(
    private readonly ctx: EdgeContext,
    private readonly ws: WebSocket,
    /** The socket under ws, corked while a batch of frames is written. */
    private readonly socket: net.Socket,
    who: Caller,
  ) {
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (this.early) this.early.push([data, isBinary]);
      else this.receive(data, isBinary);
    });
    ws.on("close", () => this.closed());
    ws.on("error", () => this.closed());
    ctx.sessions.open(who, "session").then(
      (s) => this.opened(s),
      (err: unknown) => {
        this.early = undefined;
        if (ws.readyState === ws.OPEN) closeWithError(ws, toConnectError(err));
      },
    );
  }

  private opened(s: Session) {
    this.s = s;
    const queued = this.early;
    this.early = undefined;
    if (!queued) {
      // The socket closed while the session opened.
      void this.ctx.sessions.release(s);
      return;
    }
    this.runner = new FrameRunner(this.ctx, s);
    for (const [data, isBinary] of queued) this.receive(data, isBinary);
    this.write();
  }

  private receive(data: Buffer, isBinary: boolean) {
    const { s, runner, ws } = this;
    if (!s || !runner || s.isClosed) return;
    if (!isBinary) {
      s.close(new ConnectError("frames must be binary protobuf", Code.InvalidArgument));
      return;
    }
    let req: SessionRequest;
    try {
      req = fromBinary(SessionRequestSchema, data);
    } catch (err) {
      s.close(toConnectError(fail.invalid("malformed frame", err)));
      return;
    }
    s.heard();
    if (runner.start(req)) {
      ws.pause();
      runner.onFreed = () => ws.resume();
    }
  }

  private closed() {
    this.early = undefined;
    if (!this.s) return;
    this.s.close();
    void this.ctx.sessions.release(this.s);
  }

  /** Frames queued in one turn leave together. */
  private onReadable() {
    if (this.writing) return;
    this.writing = true;
    queueMicrotask(() => this.write());
  }

  /**
   * Writes what is queued until the socket pushes back; frames that wait stay
   * in the session's outbox, which sheds and falls behind as its limits say.
   */
  private write() {
    const { s } = this;
    this.writing = false;
    if (!s || this.finished || this.congested) return;
    // One write for everything queued, not one per frame.
    this.socket.cork();
    try {
      this.writeQueued(s);
    } finally {
      this.socket.uncork();
    }
  }

  private writeQueued(s: Session) {
    const { ws } = this;
    for (;;) {
      if (ws.readyState !== ws.OPEN) {
        s.close();
        return;
      }
      const f = s.take();
      if (!f) break;
      const bytes = encode(f);
      if (ws.bufferedAmount + bytes.length <= writeHighWater) {
        ws.send(bytes);
        continue;
      }
      // Sent last, so once it is written everything before it is too.
      this.congested = true;
      ws.send(bytes, (err) => {
        this.congested = false;
        if (!err) this.write();
      });
      return;
    }
    if (!s.isClosed) {
      s.onReadable(this.scheduleWrite);
      return;
    }
    this.finished = true;
    void this.ctx.sessions.release(s);
    if (s.error) closeWithError(ws, s.error);
    else ws.close(1000);
  }
}

/** Sends the error frame, then closes with 4000 + its gRPC code (1007 for bad input). */
function closeWithError(ws: WebSocket, err: ConnectError) {
  const last = frame({ case: "error", value: { code: err.code, message: err.rawMessage } });
  ws.send(encode(last), () => undefined);
  ws.close(
    err.code === Code.InvalidArgument ? 1007 : 4000 + err.code,
    err.rawMessage.slice(0, 120),
  );
}
