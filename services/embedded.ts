import type { Agent } from "node:https";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { RouterService } from "../gen/chat/internal/v1/router_service_pb.js";
import { StoreService } from "../gen/chat/internal/v1/store_service_pb.js";
import { readFcmProjectId } from "../lib/backends/fcm-push.js";
import { createInProcessLog } from "../lib/backends/memory/in-process-log.js";
import { openSqliteStore } from "../lib/backends/sqlite/sqlite-store.js";
import type { Config } from "../lib/config.js";
import { newId } from "../lib/ids.js";
import { createInProcessTransport } from "../lib/in-process-transport.js";
import type { Logger } from "../lib/logger.js";
import { createMetrics, serveMetrics } from "../lib/metrics.js";
import { createEdge } from "./edge/create.js";
import { internalInterceptors, pushFrom, softStateFrom, tokensFrom } from "./parts.js";
import { createRouter } from "./router/create.js";
import { createStore } from "./store/create.js";

/**
 * The embedded default: edge, router and store in one process on SQLite,
 * the in-process log and in-memory soft state (or Redis, when configured). The services still talk
 * through their Connect clients and interceptors, over in-process transports.
 * `fcmAgent` carries FCM's HTTPS requests (a proxy; tests route it to a stand-in).
 * Throws ConfigError when a configured file cannot be used.
 */
export function createEmbedded(config: Config, deps: { logger: Logger; fcmAgent?: Agent }) {
  const logger = deps.logger;
  // Before anything opens: a key file that cannot be used stops start-up with nothing to close.
  if (config.push.fcmCredentialsFile) readFcmProjectId(config.push.fcmCredentialsFile);
  const tokens = tokensFrom(config, logger);

  const sqlite = openSqliteStore({
    path: join(config.dataDir, "chat.db"),
    synchronous: config.sqlite.synchronous,
  });
  const log = createInProcessLog();
  const soft = softStateFrom(config, logger);
  const metrics = createMetrics();

  const store = createStore({ config, log, events: sqlite, metadata: sqlite, logger, metrics });
  const internal = { interceptors: internalInterceptors(metrics, logger) };
  const storeClient = createClient(StoreService, createInProcessTransport(store.routes, internal));
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
  const routerClient = createClient(
    RouterService,
    createInProcessTransport(router.routes, internal),
  );
  const edge = createEdge({
    config,
    edgeId: newId("g_"),
    router: routerClient,
    store: storeClient,
    soft,
    tokens,
    logger,
    metrics,
  });
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;

  return {
    tokens,
    metrics,
    /** The metrics listener's address, when metrics are enabled. */
    get metricsAddress() {
      return metricsServer?.address;
    },
    /** Starts store, router and edge; resolves to the edge's address. */
    async start() {
      await store.start();
      await router.start();
      if (config.metrics.enabled) {
        metricsServer = await serveMetrics(metrics, config.metrics.host, config.metrics.port);
      }
      return edge.start();
    },
    /** Stops in reverse order; acknowledged events are already committed. */
    async stop() {
      await edge.stop();
      await metricsServer?.close();
      await router.stop();
      await store.stop();
      await soft.close();
      await sqlite.close();
    },
    edge,
  };
}
