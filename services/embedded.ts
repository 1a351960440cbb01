import type { Agent } from "node:https";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { RouterService } from "../gen/chat/internal/v1/router_service_pb.js";
import { StoreService } from "../gen/chat/internal/v1/store_service_pb.js";
import { createTokenService, loadOrCreateDevKey } from "../lib/auth/tokens.js";
import { createFcmPush, readFcmProjectId } from "../lib/backends/fcm-push.js";
import { createInProcessLog } from "../lib/backends/memory/in-process-log.js";
import { createMemorySoftState } from "../lib/backends/memory/memory-soft-state.js";
import type { PushQueueOptions } from "../lib/backends/push-queue.js";
import { createRedisSoftState } from "../lib/backends/redis/redis-soft-state.js";
import { openSqliteStore } from "../lib/backends/sqlite/sqlite-store.js";
import { createWebhookPush } from "../lib/backends/webhook-push.js";
import type { Config } from "../lib/config.js";
import { newId } from "../lib/ids.js";
import { createInProcessTransport } from "../lib/in-process-transport.js";
import { boundaryInterceptor } from "../lib/interceptors.js";
import type { Logger } from "../lib/logger.js";
import { createMetrics, metricsInterceptor, serveMetrics } from "../lib/metrics.js";
import { createEdge } from "./edge/create.js";
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
  let signing = config.auth;
  if (signing.signingKeys.length === 0) {
    // DEV MODE ONLY (toConfig refuses an empty key set otherwise).
    const key = loadOrCreateDevKey(config.dataDir);
    logger.warn({ kid: key.kid }, "dev mode: using the dev signing key from the data directory");
    signing = { ...signing, signingKeys: [key], activeKeyId: key.kid };
  }
  const tokens = createTokenService({
    keys: signing.signingKeys,
    activeKeyId: signing.activeKeyId,
    issuer: signing.issuer,
    acceptDevTokens: config.devMode,
  });

  const sqlite = openSqliteStore({
    path: join(config.dataDir, "chat.db"),
    synchronous: config.sqlite.synchronous,
  });
  const log = createInProcessLog();
  const soft = config.redis.url
    ? createRedisSoftState({
        url: config.redis.url,
        keyPrefix: config.redis.keyPrefix,
        log: logger.child({ name: "redis" }),
        // Edges re-attach devices on every heartbeat.
        registryTtlMs: Math.max(120_000, 4 * config.session.heartbeatIntervalMs),
      })
    : createMemorySoftState();
  const metrics = createMetrics();

  const store = createStore({ config, log, events: sqlite, metadata: sqlite, logger, metrics });
  const internal = {
    interceptors: [
      metricsInterceptor(metrics),
      boundaryInterceptor(logger.child({ name: "internal" })),
    ],
  };
  const storeClient = createClient(StoreService, createInProcessTransport(store.routes, internal));
  const pushQueue: PushQueueOptions = {
    store: storeClient,
    log: logger.child({ name: "router.push" }),
    onDrop: (reason) => metrics.pushDropped.inc({ reason }),
  };
  const push = config.push.webhookUrl
    ? createWebhookPush({
        ...pushQueue,
        url: config.push.webhookUrl,
        secret: config.push.webhookSecret,
      })
    : config.push.fcmCredentialsFile
      ? createFcmPush({
          ...pushQueue,
          credentialsFile: config.push.fcmCredentialsFile,
          ...(deps.fcmAgent ? { agent: deps.fcmAgent } : {}),
        })
      : undefined;
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
