import { create, type DescMethod, type DescMethodUnary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextValues,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type Transport,
  type UnaryRequest,
} from "@connectrpc/connect";

type AnyFn = Parameters<Interceptor>[0];
type Impl = (request: unknown, ctx: HandlerContext) => unknown;

/** Never aborted: in-process calls without a caller signal share it. */
const neverAborted = new AbortController().signal;

/** Headers that refuse changes: shared by every call that has none. */
const noHeaders = new Headers();
for (const name of ["append", "set", "delete"]) {
  Object.defineProperty(noHeaders, name, {
    value: () => {
      throw new TypeError("these headers are shared and read-only");
    },
  });
}

/**
 * A handler's context. Response headers and trailers exist only once the
 * handler asks for them: internal calls run per message and rarely set any.
 */
class CallContext implements HandlerContext {
  readonly method: UnaryRequest["method"];
  readonly service: UnaryRequest["service"];
  readonly signal: AbortSignal;
  readonly requestMethod: string;
  readonly requestHeader: Headers;
  readonly values: UnaryRequest["contextValues"];
  readonly url: string;
  readonly protocolName = "in-process";
  writtenHeader: Headers | undefined;
  writtenTrailer: Headers | undefined;

  constructor(req: UnaryRequest) {
    this.method = req.method;
    this.service = req.service;
    this.signal = req.signal;
    this.requestMethod = req.requestMethod;
    this.requestHeader = req.header;
    this.values = req.contextValues;
    this.url = req.url;
  }
  timeoutMs() {
    return undefined;
  }
  get responseHeader() {
    this.writtenHeader ??= new Headers();
    return this.writtenHeader;
  }
  get responseTrailer() {
    this.writtenTrailer ??= new Headers();
    return this.writtenTrailer;
  }
}

/**
 * A Connect transport to services in the same process. The serving side's
 * interceptors run as over any transport, but messages are handed over by
 * reference instead of being serialized, and no per-call abort controllers
 * are built (Connect's in-memory transport spends most of an internal call on
 * those). Callers and handlers must treat what they pass and receive as
 * read-only. Unary methods only: the internal services have no streams.
 */
export function createInProcessTransport(
  routes: (router: ConnectRouter) => void,
  opts: { interceptors?: Interceptor[] } = {},
): Transport {
  const impls = new Map<DescMethod, Impl>();
  const recorder: ConnectRouter = {
    handlers: [],
    service(service, implementation) {
      const spec = createServiceImplSpec(service, implementation);
      for (const m of Object.values(spec.methods)) impls.set(m.method, m.impl as Impl);
      return recorder;
    },
    rpc(method, impl) {
      impls.set(method, impl as Impl);
      return recorder;
    },
  };
  routes(recorder);

  const serve: AnyFn = async (req) => {
    const impl = impls.get(req.method);
    if (req.stream || !impl) {
      throw new ConnectError(
        `${req.method.parent.typeName}.${req.method.name} is not implemented`,
        Code.Unimplemented,
      );
    }
    const ctx = new CallContext(req);
    const output = await impl(req.message, ctx);
    return {
      stream: false,
      service: req.service,
      method: req.method,
      header: ctx.writtenHeader ?? noHeaders,
      trailer: ctx.writtenTrailer ?? noHeaders,
      message: create(req.method.output, output as never),
    };
  };
  const chain = (opts.interceptors ?? []).reduceRight<AnyFn>(
    (next, interceptor) => interceptor(next),
    serve,
  );

  return {
    async unary(method, signal, _timeoutMs, header, input, contextValues) {
      if (signal?.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
      const req: UnaryRequest = {
        stream: false,
        service: method.parent,
        method: method as DescMethodUnary,
        requestMethod: "POST",
        url: `in-process:///${method.parent.typeName}/${method.name}`,
        signal: signal ?? neverAborted,
        header: header === undefined ? noHeaders : new Headers(header),
        contextValues: contextValues ?? createContextValues(),
        message: create(method.input, input),
      };
      try {
        return (await chain(req)) as never;
      } catch (err) {
        throw ConnectError.from(err, Code.Internal);
      }
    },
    async stream(method) {
      throw new ConnectError(
        `${method.parent.typeName}.${method.name}: streams are not supported in process`,
        Code.Unimplemented,
      );
    },
  };
}
