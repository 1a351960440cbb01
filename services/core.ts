import http2 from "node:http2";
import type { Agent } from "node:https";
import type net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { RouterService } from "../gen/chat/internal/v1/router_service_pb.js";
import { StoreService } from "../gen/chat/internal/v1/store_service_pb.js";
import type { Config } from "../lib/config.js";
import { coresHeader } from "../lib/core-shards.js";
import { createInternalServer } from "../lib/internal-http2.js";
import type { Logger } from "../lib/logger.js";
import { serveMetrics } from "../lib/metrics.js";
import { createRouterAndStore } from "./parts.js";

/**
 * The core of a split deployment (role "core"): router and store (SQLite or
 * Cassandra) and the in-process log, serving RouterService and StoreService
 * on the internal listener (lib/internal-http2.ts) to any number of edge
 * processes. Every call must carry the internal secret. Fan-out reaches the
 * edges through the edge bus in Redis, which this process and every edge
 * share. Edges may spread conversations over several cores
 * (lib/core-shards.ts) when the store is in Cassandra; a core on SQLite
 * refuses calls from edges that name more than one core.
 */
export function createCore(config: Config, deps: { logger: Logger; fcmAgent?: Agent }) {
  const core = createRouterAndStore(config, deps);
  const { store, router, metrics } = core;
  const serve = createInternalServer({
    services: [StoreService, RouterService],
    routes: (r) => {
      store.routes(r);
      router.routes(r);
    },
    interceptors: core.interceptors,
    secret: config.core.secret,
    admit: (headers) =>
      config.cassandra.contactPoints.length === 0 && Number(headers[coresHeader] ?? 1) > 1
        ? new ConnectError(
            "several cores need the store in Cassandra; this core keeps it in a local SQLite file",
            Code.FailedPrecondition,
          )
        : undefined,
  });
  // Edges multiplex every call on one connection each: no call should wait behind a stream limit.
  const server = http2.createServer({ settings: { maxConcurrentStreams: 100_000 } });
  server.on("stream", serve);
  // No Nagle: an answer's headers, data and trailers go out as separate writes.
  server.on("connection", (socket: net.Socket) => socket.setNoDelay(true));
  const connections = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    connections.add(session);
    session.on("close", () => connections.delete(session));
  });
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;

  return {
    metrics,
    /** Starts store and router, then the internal listener; resolves to its address. */
    async start(): Promise<net.AddressInfo> {
      await core.start();
      if (config.metrics.enabled) {
        metricsServer = await serveMetrics(metrics, config.metrics.host, config.metrics.port);
      }
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(config.core.port, config.core.host, () => resolve());
      });
      return server.address() as net.AddressInfo;
    },
    /**
     * Stops taking calls, lets those in flight finish, then stops router and
     * store; acknowledged events are already committed.
     */
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Edges hold their connection open: GOAWAY lets the calls in flight finish, then closes it.
      for (const session of connections) session.close();
      await closed;
      await metricsServer?.close();
      await core.stop();
    },
  };
}
