import type http from "node:http";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
// Connect's protocol internals, exported without a semver promise: the version is pinned exactly.
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamFromJson,
  endStreamToJson,
  errorFromJsonBytes,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import {
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { Logger } from "../../lib/logger.js";

/** Set by the first interceptor: the call got as far as our code. */
const reachedKey = createContextKey<{ reached: boolean } | undefined>(undefined);

/** Goes first in the chain: marks that Connect read the request and handed it on. */
export const markReached: Interceptor = (next) => (req) => {
  const mark = req.contextValues.get(reachedKey);
  if (mark) mark.reached = true;
  return next(req);
};

const malformed = "malformed request message";
const envelopeHeader = 5;
const grpcStatus = "grpc-status";
const grpcMessage = "grpc-message";
const internal = String(Code.Internal);
const invalid = String(Code.InvalidArgument);

/**
 * The one message of a body that is exactly one envelope with `flag`, or
 * undefined: an error before any answer is a body of one trailer (gRPC-Web)
 * or end-stream message (Connect streaming).
 */
function only(flag: number, chunks: Uint8Array[]): Uint8Array | undefined {
  const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  if (body.length < envelopeHeader || body[0] !== flag) return undefined;
  const length = new DataView(body.buffer, body.byteOffset).getUint32(1);
  if (envelopeHeader + length !== body.length) return undefined;
  return body.subarray(envelopeHeader);
}

function envelope(flag: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(envelopeHeader + data.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, envelopeHeader);
  return out;
}

async function collect(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  if (body) for await (const c of body) chunks.push(c);
  return chunks;
}

async function* replay(chunks: Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* chunks;
}

/**
 * Connect answers a request message it cannot parse (binary) with INTERNAL,
 * the gRPC convention, before any interceptor runs. The edge's policy is that
 * a client's unreadable input is INVALID_ARGUMENT: so an INTERNAL answer to a
 * call that never reached our interceptors is rewritten to it, in the answer's
 * own protocol (gRPC-Web text is left as it is). Errors after our code ran
 * keep their code.
 */
async function asClientsFault(
  res: UniversalServerResponse,
  mark: { reached: boolean },
): Promise<UniversalServerResponse> {
  // Settled by now: the handler resolves once the first answer bytes or the
  // error exist, and a request it could read went through the interceptors
  // before that. Calls that reached our code (every stream among them) pass untouched.
  if (mark.reached) return res;
  const contentType = res.header?.get("content-type") ?? "";
  if (contentType.startsWith("application/grpc-web")) {
    if (contentType.includes("text")) return res;
    const source = res.body;
    return {
      ...res,
      body: (async function* () {
        const chunks = await collect(source);
        const trailer = only(trailerFlag, chunks);
        const parsed = trailer && trailerParse(trailer);
        if (parsed?.get(grpcStatus) !== internal) return yield* chunks;
        parsed.set(grpcStatus, invalid);
        parsed.set(grpcMessage, encodeURIComponent(malformed));
        yield envelope(trailerFlag, trailerSerialize(parsed));
      })(),
    };
  }
  if (contentType.startsWith("application/grpc")) {
    const { body: source, trailer } = res;
    if (!trailer) return res;
    return {
      ...res,
      body: (async function* () {
        if (source) yield* source;
        // Trailers go out after the body, so they can still change here.
        if (trailer.get(grpcStatus) === internal) {
          trailer.set(grpcStatus, invalid);
          trailer.set(grpcMessage, encodeURIComponent(malformed));
        }
      })(),
    };
  }
  if (contentType.startsWith("application/connect+")) {
    const source = res.body;
    return {
      ...res,
      body: (async function* () {
        const chunks = await collect(source);
        const end = only(endStreamFlag, chunks);
        const parsed = end && endStreamFromJson(end);
        if (parsed?.error?.code !== Code.Internal) return yield* chunks;
        const error = new ConnectError(malformed, Code.InvalidArgument);
        const json = JSON.stringify(endStreamToJson(parsed.metadata, error, undefined));
        yield envelope(endStreamFlag, Buffer.from(json, "utf8"));
      })(),
    };
  }
  // Connect unary: the error is the whole body, JSON (never compressed at this
  // size), its length in the headers, and the HTTP status says its code.
  if (res.status !== codeToHttpStatus(Code.Internal)) return res;
  if (res.header?.has("content-encoding")) return res;
  const chunks = await collect(res.body);
  const fallback = new ConnectError("", Code.Unknown);
  let code: Code;
  try {
    code = errorFromJsonBytes(Buffer.concat(chunks), undefined, fallback).code;
  } catch {
    code = Code.Unknown;
  }
  if (code !== Code.Internal) return { ...res, body: replay(chunks) };
  const body = errorToJsonBytes(new ConnectError(malformed, Code.InvalidArgument), undefined);
  res.header?.set("content-length", String(body.byteLength));
  return { ...res, status: codeToHttpStatus(Code.InvalidArgument), body: replay([body]) };
}

/**
 * Serves Connect's router as connectNodeAdapter does (unknown paths get 404),
 * with `markReached` first among `interceptors` and asClientsFault applied
 * to every answer.
 */
export function createConnectAdapter(
  options: ConnectRouterOptions & { routes: (router: ConnectRouter) => void; log: Logger },
) {
  const router = createConnectRouter({
    ...options,
    interceptors: [markReached, ...(options.interceptors ?? [])],
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const handler = paths.get(req.url?.split("?", 2)[0] ?? "");
    if (!handler) {
      res.writeHead(404);
      res.end();
      return;
    }
    const mark = { reached: false };
    const values = createContextValues();
    values.set(reachedKey, mark);
    handler(universalRequestFromNodeRequest(req, res, undefined, values))
      .then((answer) => asClientsFault(answer, mark))
      .then((answer) => universalResponseToNodeResponse(answer, res))
      .catch((err: unknown) => {
        if (ConnectError.from(err).code === Code.Aborted) return;
        options.log.error({ err, procedure: handler.method.name }, "connect handler failed");
      });
  };
}
