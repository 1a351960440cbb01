import { timingSafeEqual } from "node:crypto";
import http2 from "node:http2";
import net from "node:net";
import { connect as connectTls } from "node:tls";
import {
  create,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createInProcessTransport } from "./in-process-transport.js";

/**
 * The internal services between a deployment's own processes (edges calling
 * the core), on bare HTTP/2: a call is one request body (the binary message)
 * and one answer, its outcome in headers. Connect's HTTP/2 stack costs about
 * 0.6 ms of CPU per unary call on each side here, and an edge makes one or
 * more per message; this costs a small fraction of that. Both sides are ours
 * and trusted alike: every call carries the internal secret.
 */
const contentType = "application/x-chat-internal+proto";
const codeHeader = "chat-code";
const messageHeader = "chat-message";

const pathOf = (m: { parent: { typeName: string }; name: string }) =>
  `/${m.parent.typeName}/${m.name}`;

/**
 * Serves `routes` (the services in `services`) on HTTP/2 streams, running
 * `interceptors` for every call as the in-process transport does. Calls
 * without `Bearer <secret>` are refused with UNAUTHENTICATED before their
 * body is read.
 */
export function createInternalServer(opts: {
  services: DescService[];
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  secret: string;
  /** Runs for every authorized call before its body is read; an error refuses the call. */
  admit?: (headers: http2.IncomingHttpHeaders) => ConnectError | undefined;
}) {
  const local = createInProcessTransport(opts.routes, { interceptors: opts.interceptors });
  const methods = new Map<string, DescMethodUnary>();
  for (const s of opts.services) {
    for (const m of s.methods)
      if (m.methodKind === "unary") methods.set(pathOf(m), m as DescMethodUnary);
  }
  const expected = Buffer.from(`Bearer ${opts.secret}`);
  const authorized = (given: string | undefined) => {
    const b = Buffer.from(given ?? "");
    return b.length === expected.length && timingSafeEqual(b, expected);
  };

  const fail = (stream: http2.ServerHttp2Stream, err: unknown) => {
    if (stream.destroyed || stream.headersSent) return;
    const ce = ConnectError.from(err);
    stream.respond(
      {
        ":status": 200,
        [codeHeader]: String(ce.code),
        [messageHeader]: encodeURIComponent(ce.rawMessage),
      },
      { endStream: true },
    );
  };

  return (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    stream.on("error", () => undefined);
    if (!authorized(headers.authorization)) {
      fail(
        stream,
        new ConnectError("internal calls need the internal secret", Code.Unauthenticated),
      );
      return;
    }
    const refused = opts.admit?.(headers);
    if (refused) {
      fail(stream, refused);
      return;
    }
    const method = methods.get(headers[":path"] ?? "");
    if (!method || headers[":method"] !== "POST") {
      fail(stream, new ConnectError(`no internal method ${headers[":path"]}`, Code.Unimplemented));
      return;
    }
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      let input: unknown;
      try {
        input = fromBinary(method.input, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
      } catch (err) {
        fail(
          stream,
          new ConnectError(
            "malformed internal request",
            Code.InvalidArgument,
            undefined,
            undefined,
            err,
          ),
        );
        return;
      }
      local.unary(method, undefined, undefined, undefined, input as never).then(
        (res) => {
          if (stream.destroyed) return;
          stream.respond({ ":status": 200, "content-type": contentType });
          // Ended once written, not with the write: a stream ended by its last write closes
          // before the write completes, and Node 20 then builds an ERR_STREAM_DESTROYED
          // (with its stack) for every call.
          stream.write(toBinary(method.output, res.message as never), (err) => {
            if (!err) stream.end();
          });
        },
        (err: unknown) => fail(stream, err),
      );
    });
  };
}

/**
 * The client side of createInternalServer: a Connect transport for unary
 * calls to `url` over one HTTP/2 connection, made on first use and again
 * after it drops (a call on a dead connection fails with UNAVAILABLE, and the
 * next one reconnects). Deadlines and abort signals end a call as Connect's
 * transports do. close() drops the connection.
 */
export function createInternalTransport(opts: {
  url: string;
  secret: string;
  /** Sent with every call. */
  headers?: Record<string, string>;
  /**
   * While calls wait, the connection is pinged; one whose ping goes
   * unanswered this long is dropped and its calls fail UNAVAILABLE (a core
   * stopped, or its machine gone, without closing the socket). 10 s by default.
   */
  pingTimeoutMs?: number;
}): Transport & {
  close(): void;
} {
  const url = new URL(opts.url);
  const tls = url.protocol === "https:";
  const at = { host: url.hostname, port: Number(url.port || (tls ? 443 : 80)) };
  let session: http2.ClientHttp2Session | undefined;
  let closed = false;
  const pingTimeoutMs = opts.pingTimeoutMs ?? 10_000;
  /** Calls waiting for an answer: an idle connection needs no pings. */
  let waiting = 0;

  /** Pings `s` while calls wait on it; destroys it when a ping goes unanswered too long. */
  const watch = (s: http2.ClientHttp2Session) => {
    let pingSince: number | undefined;
    // A connection still being made counts as an unanswered ping: its answer is the connect.
    s.once("connect", () => {
      pingSince = undefined;
    });
    const timer = setInterval(
      () => {
        if (pingSince !== undefined) {
          if (Date.now() - pingSince >= pingTimeoutMs) {
            s.destroy(new Error(`the core answered no ping for ${pingTimeoutMs} ms`));
          }
          return;
        }
        if (waiting === 0) return;
        const sent = Date.now();
        pingSince = sent;
        if (s.connecting) return;
        const queued = s.ping((err) => {
          if (!err && pingSince === sent) pingSince = undefined;
        });
        if (!queued) pingSince = undefined;
      },
      Math.max(25, pingTimeoutMs / 4),
    ).unref();
    s.once("close", () => clearInterval(timer));
  };

  const connect = () => {
    if (session && !session.closed && !session.destroyed) return session;
    const s = http2.connect(url, {
      // No Nagle: each call's headers and message go out as separate writes.
      createConnection: () =>
        (tls
          ? connectTls({ ...at, servername: url.hostname, ALPNProtocols: ["h2"] })
          : net.connect(at)
        ).setNoDelay(true),
    });
    s.on("error", () => undefined);
    watch(s);
    const drop = () => {
      if (session === s) session = undefined;
    };
    s.on("close", drop);
    s.on("goaway", drop);
    session = s;
    return s;
  };

  return {
    async unary(method, signal, timeoutMs, header, input) {
      if (closed) throw new ConnectError("internal transport is closed", Code.Unavailable);
      if (signal?.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
      const body = toBinary(method.input, create(method.input, input));
      const headers: http2.OutgoingHttpHeaders = {
        ":method": "POST",
        ":path": pathOf(method),
        "content-type": contentType,
        authorization: `Bearer ${opts.secret}`,
        ...opts.headers,
      };
      new Headers(header).forEach((v, k) => {
        if (k !== "authorization") headers[k] = v;
      });
      const message = await new Promise<Uint8Array>((resolve, reject) => {
        let req: http2.ClientHttp2Stream;
        try {
          req = connect().request(headers);
        } catch (err) {
          reject(new ConnectError("core unreachable", Code.Unavailable, undefined, undefined, err));
          return;
        }
        let settled = false;
        let timer: NodeJS.Timeout | undefined;
        waiting++;
        const finish = (err?: ConnectError, bytes?: Uint8Array) => {
          if (settled) return;
          settled = true;
          waiting--;
          if (timer) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          if (err) reject(err);
          else resolve(bytes!);
        };
        // Only a call given up on is reset, never from inside the stream's own
        // events (on Node 20 that can corrupt the heap; see docs/ARCHITECTURE.md).
        const cancel = (err: ConnectError) => {
          finish(err);
          if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
        };
        const onAbort = () => cancel(ConnectError.from(signal?.reason, Code.Canceled));
        signal?.addEventListener("abort", onAbort, { once: true });
        if (timeoutMs !== undefined && timeoutMs > 0) {
          timer = setTimeout(
            () =>
              cancel(new ConnectError("the core did not answer in time", Code.DeadlineExceeded)),
            timeoutMs,
          );
        }
        const chunks: Buffer[] = [];
        let failed: ConnectError | undefined;
        req.on("response", (h) => {
          const code = h[codeHeader];
          if (code !== undefined) {
            failed = new ConnectError(
              decodeURIComponent(String(h[messageHeader] ?? "")),
              Number(code) as Code,
            );
          } else if (h[":status"] !== 200 || h["content-type"] !== contentType) {
            // Something other than the core answered (a proxy, another server).
            failed = new ConnectError(
              `the core's address answered HTTP ${h[":status"]}`,
              Code.Unavailable,
            );
          }
        });
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () =>
          failed
            ? finish(failed)
            : finish(undefined, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)),
        );
        req.on("error", (err) =>
          finish(new ConnectError("core unreachable", Code.Unavailable, undefined, undefined, err)),
        );
        // Every call closes: its error (and stack) is made only for one that is still open.
        req.on("close", () => {
          if (!settled) finish(new ConnectError("the core closed the call", Code.Unavailable));
        });
        req.end(body);
      });
      let output: unknown;
      try {
        output = fromBinary(method.output, message);
      } catch (err) {
        throw new ConnectError(
          "malformed internal answer",
          Code.Internal,
          undefined,
          undefined,
          err,
        );
      }
      return {
        stream: false,
        service: method.parent,
        method,
        header: new Headers(),
        trailer: new Headers(),
        message: output,
      } as never;
    },
    async stream(method) {
      throw new ConnectError(
        `${method.parent.typeName}.${method.name}: internal calls are unary`,
        Code.Unimplemented,
      );
    },
    close() {
      closed = true;
      session?.close();
      session = undefined;
    },
  };
}
