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
    const ctx: HandlerContext = {
      method: req.method,
      service: req.service,
      signal: req.signal,
      timeoutMs: () => undefined,
      requestMethod: req.requestMethod,
      requestHeader: req.header,
      responseHeader: new Headers(),
      responseTrailer: new Headers(),
      protocolName: "in-process",
      values: req.contextValues,
      url: req.url,
    };
    const output = await impl(req.message, ctx);
    return {
      stream: false,
      service: req.service,
      method: req.method,
      header: ctx.responseHeader,
      trailer: ctx.responseTrailer,
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
        header: new Headers(header),
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
