import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { asClientsFault, ServerStoppingError, toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";

// Built once per method: internal calls run the interceptors for every message.
const procedures = new WeakMap<object, string>();

/** "package.Service/Method" of a call, as metrics and logs label it. */
export function procedureOf(req: {
  service: { typeName: string };
  method: { name: string };
}): string {
  let p = procedures.get(req.method);
  if (p === undefined) {
    p = `${req.service.typeName}/${req.method.name}`;
    procedures.set(req.method, p);
  }
  return p;
}

/**
 * Logs a call that ended with `ce`: server faults as errors with their
 * cause, UNAVAILABLE as a warning, the client's own mistakes and calls
 * ended by a shutdown (which logs them once, counted) at debug.
 */
export function logCallError(log: Logger, fields: Record<string, unknown>, ce: ConnectError) {
  const code = Code[ce.code];
  if (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.DataLoss) {
    log.error({ ...fields, code, err: ce.cause ?? ce }, "call failed");
  } else if (ce.code === Code.Unavailable && !(ce.cause instanceof ServerStoppingError)) {
    log.warn({ ...fields, code, err: ce.cause ?? ce }, "call unavailable");
  } else {
    log.debug({ ...fields, code, reason: ce.rawMessage }, "call rejected");
  }
}

/**
 * The outermost interceptor of every router: maps domain errors to precise
 * codes (unknown errors become INTERNAL without leaking detail), and logs
 * each call with its code and duration. Covers unary calls and streams.
 */
export function boundaryInterceptor(log: Logger): Interceptor {
  const report = (procedure: string, started: number, err: unknown) => {
    if (err === undefined) {
      if (log.isLevelEnabled("debug")) {
        log.debug({ procedure, ms: Math.round(performance.now() - started) }, "ok");
      }
      return;
    }
    const ms = Math.round(performance.now() - started);
    // Rebuilt without metadata: an error relayed from an internal client
    // carries that call's response headers, which must not leak into ours.
    const mapped = toConnectError(err);
    const ce = new ConnectError(
      mapped.rawMessage,
      mapped.code,
      undefined,
      undefined,
      mapped.cause ?? err,
    );
    logCallError(log, { procedure, ms }, ce);
    return ce;
  };
  return (next) => async (req) => {
    const procedure = procedureOf(req);
    const started = performance.now();
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req.stream ? { ...req, message: clientMessages(req.message) } : req);
    } catch (err) {
      throw report(procedure, started, err);
    }
    if (!res.stream) {
      report(procedure, started, undefined);
      return res;
    }
    const source = res.message;
    async function* mapped() {
      try {
        yield* source;
        report(procedure, started, undefined);
      } catch (err) {
        throw report(procedure, started, err) ?? err;
      }
    }
    return { ...res, message: mapped() };
  };
}

/**
 * The client's stream of request messages: one it cannot decode is this
 * client's malformed input, and ends only this stream.
 */
async function* clientMessages<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (err) {
    const ce = ConnectError.from(err);
    throw ce.code === Code.Internal ? asClientsFault(err, "malformed request message") : err;
  }
}
