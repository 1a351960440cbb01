import http2 from "node:http2";
import type { Agent } from "node:https";
import type net from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { RouterService } from "../gen/chat/internal/v1/router_service_pb.js";
import { StoreService } from "../gen/chat/internal/v1/store_service_pb.js";
import { readFcmProjectId } from "../lib/backends/fcm-push.js";
import { createInProcessLog } from "../lib/backends/memory/in-process-log.js";
import { openSqliteStore } from "../lib/backends/sqlite/sqlite-store.js";
import type { Config } from "../lib/config.js";
import { createInProcessTransport } from "../lib/in-process-transport.js";
import { createInternalServer } from "../lib/internal-http2.js";
import type { Logger } from "../lib/logger.js";
import { createMetrics, serveMetrics } from "../lib/metrics.js";
import { internalInterceptors, pushFrom, softStateFrom } from "./parts.js";
import { createRouter } from "./router/create.js";
import { createStore } from "./store/create.js";

/**
 * The core of a split deployment (role "core"): router and store on SQLite
 * and the in-process log, serving RouterService and StoreService on the
 * internal listener (lib/internal-http2.ts) to any number of edge processes.
 * Every call must carry the internal secret. Fan-out reaches the edges through the edge
 * bus in Redis, which this process and every edge share.
 */
export function createCore(config: Config, deps: { logger: Logger; fcmAgent?: Agent }) {
  const logger = deps.logger;
  if (config.push.fcmCredentialsFile) readFcmProjectId(config.push.fcmCredentialsFile);
  const sqlite = openSqliteStore({
    path: join(config.dataDir, "chat.db"),
    synchronous: config.sqlite.synchronous,
  });
  const log = createInProcessLog();
  const soft = softStateFrom(config, logger);
  const metrics = createMetrics();
  const store = createStore({ config, log, events: sqlite, metadata: sqlite, logger, metrics });
  const interceptors = internalInterceptors(metrics, logger);
  // The router's own store calls stay in the process.
  const storeClient = createClient(
    StoreService,
    createInProcessTransport(store.routes, { interceptors }),
  );
  const push = pushFrom(config, {
    store: storeClient,
    logger,
    metrics,
    ...(deps.fcmAgent ? { fcmAgent: deps.fcmAgent } : {}),
  });
  const router = createRouter({
    config,
    log,
    store: storeClient,
    soft,
    logger,
    metrics,
    ...(push ? { push } : {}),
  });
  const serve = createInternalServer({
    services: [StoreService, RouterService],
    routes: (r) => {
      store.routes(r);
      router.routes(r);
    },
    interceptors,
    secret: config.core.secret,
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
      await store.start();
      await router.start();
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
      await router.stop();
      await store.stop();
      await soft.close();
      await sqlite.close();
    },
  };
}
