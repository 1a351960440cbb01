import type { Agent } from "node:https";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { StoreService } from "../gen/chat/internal/v1/store_service_pb.js";
import { createTokenService, loadOrCreateDevKey } from "../lib/auth/tokens.js";
import { openCassandraStore } from "../lib/backends/cassandra/cassandra-store.js";
import type { EventStore } from "../lib/backends/event-store.js";
import { createFcmPush, readFcmProjectId } from "../lib/backends/fcm-push.js";
import { createInProcessLog } from "../lib/backends/memory/in-process-log.js";
import { createMemorySoftState } from "../lib/backends/memory/memory-soft-state.js";
import type { MessageLog } from "../lib/backends/message-log.js";
import type { MetadataStore } from "../lib/backends/metadata-store.js";
import { createPulsarLog } from "../lib/backends/pulsar/pulsar-log.js";
import type { PushNotifier } from "../lib/backends/push.js";
import { createRedisSoftState } from "../lib/backends/redis/redis-soft-state.js";
import type { SoftState } from "../lib/backends/soft-state.js";
import { openSqliteStore } from "../lib/backends/sqlite/sqlite-store.js";
import { createWebhookPush } from "../lib/backends/webhook-push.js";
import type { Config } from "../lib/config.js";
import { createInProcessTransport } from "../lib/in-process-transport.js";
import { boundaryInterceptor } from "../lib/interceptors.js";
import type { Logger } from "../lib/logger.js";
import { createMetrics, type Metrics, metricsInterceptor } from "../lib/metrics.js";
import { createRouter } from "./router/create.js";
import type { StoreClient } from "./router/store-client.js";
import { createStore } from "./store/create.js";

/** The token service: the configured signing keys, or in dev mode the data directory's dev key. */
export function tokensFrom(config: Config, logger: Logger) {
  let signing = config.auth;
  if (signing.signingKeys.length === 0) {
    // DEV MODE ONLY (toConfig refuses an empty key set otherwise).
    const key = loadOrCreateDevKey(config.dataDir);
    logger.warn({ kid: key.kid }, "dev mode: using the dev signing key from the data directory");
    signing = { ...signing, signingKeys: [key], activeKeyId: key.kid };
  }
  return createTokenService({
    keys: signing.signingKeys,
    activeKeyId: signing.activeKeyId,
    issuer: signing.issuer,
    acceptDevTokens: config.devMode,
  });
}

/** Soft state in Redis when configured, else in memory (one process only). */
export function softStateFrom(config: Config, logger: Logger): SoftState {
  if (!config.redis.url) return createMemorySoftState();
  return createRedisSoftState({
    url: config.redis.url,
    keyPrefix: config.redis.keyPrefix,
    log: logger.child({ name: "redis" }),
    // Edges re-attach devices on every heartbeat.
    registryTtlMs: Math.max(120_000, 4 * config.session.heartbeatIntervalMs),
  });
}

/** The configured push backend, if any. `fcmAgent` carries FCM's HTTPS requests. */
export function pushFrom(
  config: Config,
  deps: { store: StoreClient; logger: Logger; metrics: Metrics; fcmAgent?: Agent },
): PushNotifier | undefined {
  const queue = {
    store: deps.store,
    log: deps.logger.child({ name: "router.push" }),
    onDrop: (reason: "full" | "oversized") => deps.metrics.pushDropped.inc({ reason }),
  };
  if (config.push.webhookUrl) {
    return createWebhookPush({
      ...queue,
      url: config.push.webhookUrl,
      secret: config.push.webhookSecret,
    });
  }
  if (config.push.fcmCredentialsFile) {
    return createFcmPush({
      ...queue,
      credentialsFile: config.push.fcmCredentialsFile,
      ...(deps.fcmAgent ? { agent: deps.fcmAgent } : {}),
    });
  }
  return undefined;
}

/** What the internal services (router, store) run for every call, whichever transport carries it. */
export const internalInterceptors = (metrics: Metrics, logger: Logger) => [
  metricsInterceptor(metrics),
  boundaryInterceptor(logger.child({ name: "internal" })),
];

/**
 * Where events and metadata live: Cassandra when contact points are
 * configured, else SQLite in the data directory. `open` prepares it (the
 * Cassandra keyspace and tables are created if missing).
 */
export function eventsAndMetadataFrom(config: Config): {
  events: EventStore;
  metadata: MetadataStore;
  open(): Promise<void>;
  close(): Promise<void>;
} {
  if (config.cassandra.contactPoints.length > 0) {
    const cassandra = openCassandraStore(config.cassandra);
    return {
      events: cassandra,
      metadata: cassandra,
      open: () => cassandra.migrate(),
      close: () => cassandra.close(),
    };
  }
  const sqlite = openSqliteStore({
    path: join(config.dataDir, "chat.db"),
    synchronous: config.sqlite.synchronous,
  });
  return { events: sqlite, metadata: sqlite, open: async () => {}, close: () => sqlite.close() };
}

/**
 * The message log: Pulsar when configured (`open` connects and waits for the
 * store to consume the topic's backlog), else in process.
 */
export function logFrom(
  config: Config,
  logger: Logger,
): { log: MessageLog; open(): Promise<void> } {
  if (!config.pulsar.webUrl) return { log: createInProcessLog(), open: async () => {} };
  const log = createPulsarLog({
    webUrl: config.pulsar.webUrl,
    topic: config.pulsar.topic,
    subscription: config.pulsar.subscription,
    log: logger.child({ name: "pulsar" }),
  });
  return { log, open: () => log.open() };
}

/**
 * Router and store on the configured event store and log, with the store
 * client the router uses (in process): what the embedded server and a
 * split's core both run. Checks a configured FCM key file
 * before anything opens.
 */
export function createRouterAndStore(config: Config, deps: { logger: Logger; fcmAgent?: Agent }) {
  const logger = deps.logger;
  // Before anything opens: a key file that cannot be used stops start-up with nothing to close.
  if (config.push.fcmCredentialsFile) readFcmProjectId(config.push.fcmCredentialsFile);
  const stores = eventsAndMetadataFrom(config);
  const { log, open: openLog } = logFrom(config, logger);
  const soft = softStateFrom(config, logger);
  const metrics = createMetrics();
  const store = createStore({
    config,
    log,
    events: stores.events,
    metadata: stores.metadata,
    logger,
    metrics,
  });
  const interceptors = internalInterceptors(metrics, logger);
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
  return {
    soft,
    metrics,
    store,
    storeClient,
    router,
    interceptors,
    async start() {
      await stores.open();
      await store.start();
      await openLog();
      await router.start();
    },
    /** Router first (it drains what is in flight into the store), then the store and the rest. */
    async stop() {
      await router.stop();
      await store.stop();
      await soft.close();
      await stores.close();
    },
  };
}
