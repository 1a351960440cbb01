import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { type ConnectRouter, cors as connectCors, type Interceptor } from "@connectrpc/connect";
import type { Config } from "../../lib/config.js";
import type { Logger } from "../../lib/logger.js";
import { edgeCompressions } from "./compression.js";
import { createConnectAdapter } from "./connect-adapter.js";

export interface HttpServerOptions {
  config: Config;
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  /** Aborting it ends every streaming call with UNAVAILABLE. */
  shutdownSignal: AbortSignal;
  onUpgrade: (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => void;
  /** Serves the HTTP/2 streams it claims ahead of Connect (gRPC Session streams). */
  direct?: StreamEndpoint;
  /** Answers GET /healthz for proxies and orchestrators that do not speak gRPC health. */
  isServing: () => boolean;
  log: Logger;
}

const h2Preface = Buffer.from("PRI * HTTP/2.0");

const destroySocket = (socket: net.Socket) => socket.destroy();

/**
 * One port for every client: HTTP/2 without TLS (gRPC, gRPC-Web, Connect)
 * and HTTP/1.1 (gRPC-Web, Connect, WebSocket upgrade). Each connection's
 * first bytes decide which server gets it. TLS terminates at the proxy
 * (see envoy/).
 */
export function createHttpServer(opts: HttpServerOptions) {
  const { limits, corsOrigins } = opts.config;
  // binaryOptions stay at their defaults: toBinary must write unknown fields,
  // which carry stored events in GetHistory and Sync answers and sync frames (see storedEventFields).
  const connect = createConnectAdapter({
    routes: opts.routes,
    interceptors: opts.interceptors,
    readMaxBytes: limits.frameMaxBytes,
    acceptCompression: edgeCompressions,
    shutdownSignal: opts.shutdownSignal,
    maxTimeoutMs: 24 * 3600 * 1000,
    log: opts.log,
  });
  const corsFor = corsResponseHeaders(corsOrigins);
  const handler = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    if (opts.direct && isDirectCall(req)) return opts.direct.serve(req.stream, req.headers);
    const cors = corsFor(req.headers.origin);
    if (cors) {
      for (const [name, value] of Object.entries(cors)) res.setHeader(name, value);
      if (req.method === "OPTIONS") {
        res.setHeader("access-control-allow-methods", connectCors.allowedMethods.join(", "));
        res.setHeader(
          "access-control-allow-headers",
          [...connectCors.allowedHeaders, "authorization"].join(", "),
        );
        res.setHeader("access-control-max-age", "7200");
        res.writeHead(204);
        res.end();
        return;
      }
    }
    if (req.url === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
      const ok = opts.isServing();
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
      res.end(ok ? "ok\n" : "shutting down\n");
      return;
    }
    connect(req as http.IncomingMessage, res as http.ServerResponse);
  };

  const h2 = http2.createServer(
    {
      ...(opts.direct ? directCallClasses(opts.direct) : {}),
      maxSessionMemory: limits.http2MaxSessionMemoryMb,
      maxHeaderListPairs: 64,
      settings: {
        maxConcurrentStreams: limits.http2MaxConcurrentStreams,
        maxFrameSize: 16_384,
        maxHeaderListSize: 16_384,
        initialWindowSize: 1 << 20,
      },
    },
    handler,
  );
  const h1 = http.createServer({ maxHeaderSize: 16_384 }, handler);
  h1.on("upgrade", opts.onUpgrade);
  h1.headersTimeout = 20_000;
  h1.keepAliveTimeout = 30_000;
  // h1 never listens itself (the listener below hands it sockets) and Node starts
  // connection tracking on "listening": without it closeIdleConnections does
  // nothing and headersTimeout/requestTimeout are never enforced.
  h1.emit("listening");

  const sockets = new Set<net.Socket>();
  /** Set while draining: what went wrong on sockets and sessions, counted for the drain's summary. */
  let drainTrouble: Record<string, number> | undefined;
  const trouble = (what: string) => {
    if (drainTrouble) drainTrouble[what] = (drainTrouble[what] ?? 0) + 1;
  };
  /** Shared by every socket (the emitter is `this`), so none holds a closure for it. */
  const onSocketError = function (this: net.Socket, err: Error & { code?: string }) {
    trouble(`socket ${err.code ?? err.name}`);
    this.destroy();
  };
  const goingAway = new WeakSet<http2.Http2Session>();
  /**
   * Closes a session without refusing a stream its client already sent: a
   * PING first, since every frame the client wrote before answering it comes
   * before the answer; then close() sends the GOAWAY naming the last stream
   * taken (a later one is refused, REFUSED_STREAM) and ends the session once
   * its streams are done. (A GOAWAY before the PING would make Node's HTTP/2
   * core ignore new streams at once.) A client that never answers the PING is
   * closed on when `waitMs` runs out.
   */
  const goAway = (s: http2.Http2Session, waitMs: number) => {
    if (goingAway.has(s) || s.closed || s.destroyed) return;
    goingAway.add(s);
    const close = () => {
      clearTimeout(timer);
      if (!s.closed && !s.destroyed) s.close();
    };
    const timer = setTimeout(close, waitMs).unref();
    if (!s.ping(close)) close();
  };
  // Open streams per HTTP/2 session, so shutdown can tell idle sessions and
  // finished calls apart.
  const h2Sessions = new Map<http2.Http2Session, Set<http2.ServerHttp2Stream>>();
  // A session torn down by an error resets its connection: its clients lose
  // whatever was on its way to them, so it is worth a line (no stack).
  h2.on("sessionError", (err: Error & { code?: string }) => {
    trouble(`session ${err.code ?? err.name}`);
    opts.log.warn({ code: err.code, reason: err.message }, "HTTP/2 session error");
  });
  h2.on("session", (s) => {
    h2Sessions.set(s, new Set());
    s.on("close", () => {
      h2Sessions.delete(s);
      // Ended before its GOAWAY: the client hung up, or the session was destroyed.
      if (!goingAway.has(s)) trouble("session ended before its GOAWAY");
    });
  });
  h2.on("stream", (stream) => {
    const open = stream.session && h2Sessions.get(stream.session);
    if (!open) return;
    open.add(stream);
    stream.on("close", () => open.delete(stream));
  });
  for (const s of [h1, h2]) {
    s.on("clientError", (err: Error & { code?: string }, socket: net.Socket) => {
      opts.log.debug({ err }, "client error");
      // With a listener Node no longer answers by itself: tell an HTTP/1.1
      // client why (431 for oversized headers) instead of just hanging up.
      if (s === h1 && socket.writable && socket.bytesWritten === 0) {
        const status =
          err.code === "HPE_HEADER_OVERFLOW"
            ? "431 Request Header Fields Too Large"
            : "400 Bad Request";
        socket.write(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      }
      socket.destroy();
    });
  }

  // No Nagle: HTTP/2 writes headers, data and trailers separately, and each would wait for an ACK.
  const listener = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", onSocketError);
    // A connection that never says which protocol it speaks is dropped. A timer
    // of our own: a socket timeout leaves its Timeout on the socket for good.
    let silent: NodeJS.Timeout | undefined = setTimeout(destroySocket, 10_000, socket).unref();
    socket.once("data", (chunk) => {
      clearTimeout(silent);
      // The socket's close listener shares this scope: let the timer go.
      silent = undefined;
      socket.pause();
      socket.unshift(chunk);
      if (chunk.subarray(0, 3).equals(h2Preface.subarray(0, 3))) {
        // The HTTP/2 core reads the socket's handle itself; resuming would steal bytes.
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });

  return {
    listen(host: string, port: number): Promise<net.AddressInfo> {
      return new Promise((resolve, reject) => {
        listener.once("error", reject);
        // A deep accept queue: a reconnect storm opens thousands of connections at once.
        listener.listen({ port, host, backlog: 4096 }, () => {
          listener.off("error", reject);
          resolve(listener.address() as net.AddressInfo);
        });
      });
    },
    /**
     * Stops accepting, asks HTTP/2 peers to go away, then closes what is left
     * once the drain grace (session.drainGraceMs) runs out. A connection is
     * never torn down under a request the client already sent: each session
     * takes what is on its way before its
     * GOAWAY (see goAway), so those streams are answered (UNAVAILABLE once
     * the edge stops), and Node ends the session once its streams are done,
     * reading until the client hangs up. A connection accepted but not yet
     * read gets the same once it is, as late as the grace allows.
     */
    async close() {
      const graceMs = opts.config.session.drainGraceMs;
      const started = Date.now();
      const closed = new Promise<void>((r) => listener.close(() => r()));
      const until = started + graceMs;
      const settled = started + Math.min(200, graceMs / 4);
      // What went wrong while draining, counted for the summary below: a session
      // or socket that ends in an error may take a client's last frames with it.
      const troubles: Record<string, number> = {};
      drainTrouble = troubles;
      let streamsReset = 0;
      for (;;) {
        h1.closeIdleConnections();
        for (const [s, open] of h2Sessions) {
          goAway(s, Math.max(0, until - Date.now()));
          // A call whose response is complete but whose client never closed
          // its request side is over: reset it, as gRPC servers do.
          if (Date.now() >= settled) {
            for (const st of open) {
              if (!st.writableFinished || st.closed) continue;
              st.close(http2.constants.NGHTTP2_NO_ERROR);
              streamsReset++;
            }
          }
        }
        if (sockets.size === 0 || Date.now() >= until) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const closedOn = sockets.size;
      if (closedOn > 0) {
        opts.log.warn(
          { connections: closedOn, graceMs },
          "drain grace ran out: closing on connections left",
        );
      }
      for (const s of sockets) s.destroy();
      drainTrouble = undefined;
      opts.log.info(
        { ms: Date.now() - started, closedOn, streamsReset, troubles },
        "connections drained",
      );
      // Stops h1's connection tracking timer.
      h1.close();
      await closed;
    },
  };
}

/**
 * The CORS headers of a response to a request from `origin`, or undefined
 * when that origin is not allowed (the browser then refuses to read the
 * response). `"*"` in `allowed` allows every origin.
 */
export function corsResponseHeaders(allowed: readonly string[]) {
  const allowAll = allowed.includes("*");
  const exposed = connectCors.exposedHeaders.join(", ");
  return (origin: string | undefined): Record<string, string> | undefined =>
    origin && (allowAll || allowed.includes(origin))
      ? {
          "access-control-allow-origin": origin,
          vary: "origin",
          "access-control-expose-headers": exposed,
        }
      : undefined;
}

/** An HTTP/2 endpoint served on the bare stream, ahead of Node's compatibility layer and Connect. */
export interface StreamEndpoint {
  /** Whether this endpoint takes the call with these request headers. */
  claims(headers: http2.IncomingHttpHeaders): boolean;
  serve(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void;
}

const directCall = Symbol("directCall");

/** What Node's HTTP/2 compatibility layer hands the request handler for a claimed stream. */
interface DirectCall {
  [directCall]: true;
  stream: http2.ServerHttp2Stream;
  headers: http2.IncomingHttpHeaders;
}

const isDirectCall = (req: object): req is DirectCall => directCall in req;

/**
 * Request and response classes for http2.createServer that skip Node's
 * compatibility wrappers for streams `endpoint` claims: the request handler
 * gets a DirectCall instead (see isDirectCall). Every other stream gets the
 * usual Http2ServerRequest and Http2ServerResponse. A subclass constructor
 * may return another object; the arguments pass through untouched.
 */
function directCallClasses(endpoint: StreamEndpoint) {
  const claimed = new WeakSet<http2.ServerHttp2Stream>();
  const noResponse = Object.freeze({});
  class Request extends http2.Http2ServerRequest {
    // biome-ignore lint/correctness/noUnreachableSuper: a claimed stream gets no wrapper at all
    constructor(...args: ConstructorParameters<typeof http2.Http2ServerRequest>) {
      const [stream, headers] = args;
      if (endpoint.claims(headers)) {
        claimed.add(stream);
        // biome-ignore lint/correctness/noConstructorReturn: the point of this class
        return { [directCall]: true, stream, headers } satisfies DirectCall as never;
      }
      super(...args);
    }
  }
  class Response extends http2.Http2ServerResponse {
    // biome-ignore lint/correctness/noUnreachableSuper: a claimed stream gets no wrapper at all
    constructor(...args: ConstructorParameters<typeof http2.Http2ServerResponse>) {
      // biome-ignore lint/correctness/noConstructorReturn: paired with Request above
      if (claimed.has(args[0])) return noResponse as never;
      super(...args);
    }
  }
  return { Http2ServerRequest: Request, Http2ServerResponse: Response };
}
