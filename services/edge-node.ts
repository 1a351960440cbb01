import { createClient } from "@connectrpc/connect";
import { RouterService } from "../gen/chat/internal/v1/router_service_pb.js";
import { StoreService } from "../gen/chat/internal/v1/store_service_pb.js";
import type { Config } from "../lib/config.js";
import { coresHeader, createCoreShards } from "../lib/core-shards.js";
import { newId } from "../lib/ids.js";
import { createInternalTransport } from "../lib/internal-http2.js";
import type { Logger } from "../lib/logger.js";
import { createMetrics, serveMetrics } from "../lib/metrics.js";
import { createEdge } from "./edge/create.js";
import { softStateFrom, tokensFrom } from "./parts.js";

/**
 * An edge of a split deployment (role "edge"): client sessions, auth and
 * delivery, with the router and store reached at `core.urls`, over one HTTP/2
 * connection per core (lib/internal-http2.ts); with several cores each call
 * goes to the core that owns what it is about (lib/core-shards.ts). Run as
 * many as the load needs behind a proxy; they share the registry, the bus and
 * presence in Redis, so a device may connect to any of them.
 */
export function createEdgeNode(config: Config, deps: { logger: Logger }) {
  const logger = deps.logger;
  const tokens = tokensFrom(config, logger);
  const soft = softStateFrom(config, logger);
  const metrics = createMetrics();
  // One HTTP/2 connection per core carries every internal call to it.
  const shared = { [coresHeader]: String(config.core.urls.length) };
  const cores = config.core.urls.map((url) =>
    createInternalTransport({
      url,
      secret: config.core.secret,
      headers: shared,
      pingTimeoutMs: config.core.pingTimeoutMs,
    }),
  );
  const transport = cores.length === 1 ? cores[0]! : createCoreShards(cores);
  const edge = createEdge({
    config,
    edgeId: newId("g_"),
    router: createClient(RouterService, transport),
    store: createClient(StoreService, transport),
    soft,
    tokens,
    logger,
    metrics,
  });
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;

  return {
    tokens,
    metrics,
    edge,
    /** Starts the edge; resolves to its address. */
    async start() {
      if (config.metrics.enabled) {
        metricsServer = await serveMetrics(metrics, config.metrics.host, config.metrics.port);
      }
      return edge.start();
    },
    /** Drains the edge's sessions, then drops its connection to the core. */
    async stop() {
      await edge.stop();
      await metricsServer?.close();
      transport.close();
      await soft.close();
    },
  };
}
