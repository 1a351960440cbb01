import type { Agent } from "node:https";
import { createClient } from "@connectrpc/connect";
import { RouterService } from "../gen/chat/internal/v1/router_service_pb.js";
import type { Config } from "../lib/config.js";
import { newId } from "../lib/ids.js";
import { createInProcessTransport } from "../lib/in-process-transport.js";
import type { Logger } from "../lib/logger.js";
import { serveMetrics } from "../lib/metrics.js";
import { createEdge } from "./edge/create.js";
import { createRouterAndStore, tokensFrom } from "./parts.js";

/**
 * The embedded default: edge, router and store in one process on SQLite, the
 * in-process log and in-memory soft state (or Redis, when configured). The
 * services still talk through their Connect clients and interceptors, over
 * in-process transports.
 * `fcmAgent` carries FCM's HTTPS requests (a proxy; tests route it to a stand-in).
 * Throws ConfigError when a configured file cannot be used.
 */
export function createEmbedded(config: Config, deps: { logger: Logger; fcmAgent?: Agent }) {
  const logger = deps.logger;
  // First: it checks a configured key file before anything opens.
  const core = createRouterAndStore(config, deps);
  const tokens = tokensFrom(config, logger);
  const { soft, metrics, storeClient, router, interceptors } = core;
  const routerClient = createClient(
    RouterService,
    createInProcessTransport(router.routes, { interceptors }),
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
      await core.start();
      if (config.metrics.enabled) {
        metricsServer = await serveMetrics(metrics, config.metrics.host, config.metrics.port);
      }
      return edge.start();
    },
    /** Stops in reverse order; acknowledged events are already committed. */
    async stop() {
      await edge.stop();
      await metricsServer?.close();
      await core.stop();
    },
    edge,
  };
}
