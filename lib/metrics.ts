import http from "node:http";
import type net from "node:net";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { procedureOf } from "./interceptors.js";

/**
 * The process's metrics, in a registry of its own (several servers may share
 * a process in tests). Prometheus text format, served by `serveMetrics`.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "chat_" });
  const m = {
    registry,
    rpcs: new Counter({
      name: "chat_rpc_total",
      help: "Finished calls by procedure and status code.",
      labelNames: ["procedure", "code"] as const,
      registers: [registry],
    }),
    rpcSeconds: new Histogram({
      name: "chat_rpc_duration_seconds",
      help: "Duration of unary calls.",
      labelNames: ["procedure"] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    streams: new Gauge({
      name: "chat_rpc_streams_open",
      help: "Streaming calls in progress.",
      labelNames: ["procedure"] as const,
      registers: [registry],
    }),
    committed: new Counter({
      name: "chat_events_committed_total",
      help: "Events the store committed, by kind.",
      labelNames: ["kind"] as const,
      registers: [registry],
    }),
    refused: new Counter({
      name: "chat_events_refused_total",
      help: "Events the store refused at commit, by reason.",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: "chat_commit_batch_events",
      help: "Events per store commit (group commit).",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: [registry],
    }),
    deliveries: new Counter({
      name: "chat_fanout_deliveries_total",
      help: "Frames handed to devices by fan-out, by frame kind.",
      labelNames: ["frame"] as const,
      registers: [registry],
    }),
    fanoutRetries: new Counter({
      name: "chat_fanout_retries_total",
      help: "Fan-outs (of events and receipts) tried again after the registry or bus failed.",
      registers: [registry],
    }),
    fanoutAbandoned: new Counter({
      name: "chat_fanout_abandoned_total",
      help: "Fan-outs given up: failing past the retry window, or for something other than the soft state (recipients get them by sync).",
      registers: [registry],
    }),
    sessions: new Gauge({
      name: "chat_sessions",
      help: "Client streams open on this edge.",
      registers: [registry],
    }),
    shed: new Counter({
      name: "chat_frames_shed_total",
      help: "Frames dropped for slow streams, by kind (events are caught up from the store instead).",
      labelNames: ["frame"] as const,
      registers: [registry],
    }),
    pushDropped: new Counter({
      name: "chat_push_dropped_total",
      help: "Push notifications dropped over the queue's bounds, by reason (the messages are stored and synced).",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;

interface Bound {
  procedure: string;
  seconds: { observe(seconds: number): void };
  ok: { inc(): void };
}

/** A call's outcome as metrics label it: "ok", or the code in snake case ("invalid_argument"). */
export const codeOf = (err: unknown) =>
  err === undefined
    ? "ok"
    : Code[ConnectError.from(err).code].replace(
        /[A-Z]/g,
        (c, i) => (i ? "_" : "") + c.toLowerCase(),
      );

/** Counts every call by outcome, times unary calls and tracks open streams. */
export function metricsInterceptor(metrics: Metrics): Interceptor {
  // Per method: its label and the label-bound children, so a call neither
  // builds label objects nor a timer closure (internal calls run per message).
  const bound = new WeakMap<object, Bound>();
  const bind = (method: object, procedure: string): Bound => {
    const b = {
      procedure,
      seconds: metrics.rpcSeconds.labels(procedure),
      ok: metrics.rpcs.labels(procedure, "ok"),
    };
    bound.set(method, b);
    return b;
  };
  return (next) => async (req) => {
    const b = bound.get(req.method) ?? bind(req.method, procedureOf(req));
    const procedure = b.procedure;
    if (!req.stream) {
      const started = performance.now();
      try {
        const res = await next(req);
        b.ok.inc();
        return res;
      } catch (err) {
        metrics.rpcs.inc({ procedure, code: codeOf(err) });
        throw err;
      } finally {
        b.seconds.observe((performance.now() - started) / 1000);
      }
    }
    metrics.streams.inc({ procedure });
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      metrics.streams.dec({ procedure });
      metrics.rpcs.inc({ procedure, code: codeOf(err) });
      throw err;
    }
    if (!res.stream) {
      metrics.streams.dec({ procedure });
      metrics.rpcs.inc({ procedure, code: "ok" });
      return res;
    }
    const source = res.message;
    async function* counted() {
      let outcome: unknown;
      try {
        yield* source;
      } catch (err) {
        outcome = err;
        throw err;
      } finally {
        metrics.streams.dec({ procedure });
        metrics.rpcs.inc({ procedure, code: codeOf(outcome) });
      }
    }
    return { ...res, message: counted() };
  };
}

/** Serves GET /metrics on its own listener, apart from the public port. */
export async function serveMetrics(
  metrics: Metrics,
  host: string,
  port: number,
): Promise<{ address: net.AddressInfo; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": metrics.registry.contentType });
        res.end(text);
      },
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    address: server.address() as net.AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
