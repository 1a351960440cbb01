import type http from "node:http";
import type net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { type WebSocket, WebSocketServer } from "ws";
import { authenticate, bearer, type Caller, requestBudget, spendRequestBudget } from "./auth.js";
import type { EdgeContext } from "./context.js";
import { FramePump, type FrameWire } from "./frame-pump.js";
import { frame } from "./session.js";
import { encodeSessionResponse as encode } from "./wire.js";

/** The WebSocket endpoint: binary protobuf SessionRequest in, SessionResponse out. */
export const websocketPath = "/v1/ws";

/**
 * Session over WebSocket, for clients that prefer it to gRPC streams. The
 * token comes in the `authorization` header or, for browsers, the
 * `access_token` query parameter. Oversized messages close the socket with
 * 1009; undecodable ones with 1007; a session error with 4000 + its gRPC code.
 */
export function createWebSocketEndpoint(ctx: EdgeContext) {
  const wss = new WebSocketServer({
    noServer: true,
    // The server tracks sockets for its drain and sessions by device; ws's own set would
    // cost every connection an entry and a listener.
    clientTracking: false,
    maxPayload: ctx.config.limits.frameMaxBytes,
    perMessageDeflate: false,
  });

  const budget = requestBudget(ctx.soft.limiter, ctx.config.limits);

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
        // Opening a session spends a request token, as every call and stream does.
        await spendRequestBudget(budget, who.userId);
      } catch (err) {
        const { status, text } = upgradeRefusal(err);
        return reject(socket, status, text);
      }
      wss.handleUpgrade(req, socket, head, (ws) => serveSocket(ctx, ws, socket, who));
    },
    /**
     * Stops taking upgrades. Open sockets are left to the server's drain: each
     * has its error frame and close frame on the way (its session ended), and
     * terminating it now would drop them and leave the client a bare 1006.
     */
    close() {
      wss.close();
    },
  };
}

/**
 * The HTTP answer to a refused upgrade: 401 only when the token is at fault,
 * so that a client does not log in again over a limit or an outage.
 */
function upgradeRefusal(err: unknown): { status: number; text: string } {
  switch (ConnectError.from(err).code) {
    case Code.Unauthenticated:
      return { status: 401, text: "Unauthorized" };
    case Code.PermissionDenied:
      return { status: 403, text: "Forbidden" };
    case Code.ResourceExhausted:
      return { status: 429, text: "Too Many Requests" };
    default:
      return { status: 503, text: "Service Unavailable" };
  }
}

/** A WebSocket as the frame pump writes to it; the socket under ws is corked per batch. */
class SocketWire implements FrameWire {
  constructor(
    private readonly ws: WebSocket,
    private readonly socket: net.Socket,
  ) {}

  get writable() {
    return this.ws.readyState === this.ws.OPEN;
  }

  get buffered() {
    return this.ws.bufferedAmount;
  }

  write(bytes: Uint8Array, flushed?: (err?: Error | null) => void) {
    this.ws.send(bytes, flushed);
  }

  cork() {
    this.socket.cork();
  }

  uncork() {
    this.socket.uncork();
  }

  pause() {
    this.ws.pause();
  }

  resume() {
    this.ws.resume();
  }

  finish(err: ConnectError | undefined) {
    if (err) closeWithError(this.ws, err);
    else this.ws.close(1000);
  }
}

/** Binds a socket's messages and close to its session's frame pump. */
function serveSocket(ctx: EdgeContext, ws: WebSocket, socket: net.Socket, who: Caller) {
  const pump = new FramePump(ctx, new SocketWire(ws, socket), who);
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (isBinary) pump.receive(data);
    else pump.fail(new ConnectError("frames must be binary protobuf", Code.InvalidArgument));
  });
  ws.on("close", () => pump.closed());
  ws.on("error", () => pump.closed());
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
