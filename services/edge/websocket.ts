import type http from "node:http";
import type net from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type WebSocket, WebSocketServer } from "ws";
import {
  type SessionRequest,
  SessionRequestSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import { authenticate, bearer } from "./auth.js";
import type { EdgeContext } from "./context.js";
import { runDuplex } from "./duplex.js";
import { frame } from "./session.js";

/** The WebSocket endpoint: binary protobuf SessionRequest in, SessionResponse out. */
export const websocketPath = "/v1/ws";

/** Frames a WebSocket client may have queued before reading pauses. */
const inputHighWater = 64;

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
      let who: Awaited<ReturnType<typeof authenticate>>;
      try {
        const token =
          bearer(req.headers.authorization) ?? url.searchParams.get("access_token") ?? undefined;
        who = await authenticate(ctx, token);
      } catch {
        return reject(socket, 401, "Unauthorized");
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        void serve(ctx, ws, who);
      });
    },
    close() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}

async function serve(
  ctx: EdgeContext,
  ws: WebSocket,
  who: Awaited<ReturnType<typeof authenticate>>,
) {
  const abort = new AbortController();
  ws.on("close", () => abort.abort());
  ws.on("error", () => abort.abort());
  const send = (data: Uint8Array) =>
    new Promise<void>((resolve, reject) => ws.send(data, (err) => (err ? reject(err) : resolve())));
  try {
    for await (const f of runDuplex(ctx, who, inputOf(ws), abort.signal)) {
      if (ws.readyState !== ws.OPEN) break;
      await send(toBinary(SessionResponseSchema, create(SessionResponseSchema, { frame: f })));
    }
    if (ws.readyState === ws.OPEN) ws.close(1000);
  } catch (err) {
    const ce = toConnectError(err);
    if (ws.readyState === ws.OPEN) {
      const last = frame({ case: "error", value: { code: ce.code, message: ce.rawMessage } });
      await send(
        toBinary(SessionResponseSchema, create(SessionResponseSchema, { frame: last })),
      ).catch(() => undefined);
      ws.close(
        ce.code === Code.InvalidArgument ? 1007 : 4000 + ce.code,
        ce.rawMessage.slice(0, 120),
      );
    }
  }
}

/** The socket's messages as decoded requests; pauses the socket while the session is busy. */
async function* inputOf(ws: WebSocket): AsyncGenerator<SessionRequest> {
  const queue: (Buffer | Error)[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  ws.on("message", (data, isBinary) => {
    queue.push(
      isBinary
        ? (data as Buffer)
        : new ConnectError("frames must be binary protobuf", Code.InvalidArgument),
    );
    if (queue.length >= inputHighWater) ws.pause();
    notify();
  });
  ws.on("close", () => {
    ended = true;
    notify();
  });
  for (;;) {
    const next = queue.shift();
    if (next === undefined) {
      if (ended) return;
      ws.resume();
      await new Promise<void>((r) => (wake = r));
      continue;
    }
    if (next instanceof Error) throw next;
    let req: SessionRequest;
    try {
      req = fromBinary(SessionRequestSchema, next);
    } catch (err) {
      throw fail.invalid("malformed frame", err);
    }
    yield req;
  }
}
