import type { Agent } from "node:https";
import { createTokenService, loadOrCreateDevKey } from "../lib/auth/tokens.js";
import { createFcmPush } from "../lib/backends/fcm-push.js";
import { createMemorySoftState } from "../lib/backends/memory/memory-soft-state.js";
import type { PushNotifier } from "../lib/backends/push.js";
import { createRedisSoftState } from "../lib/backends/redis/redis-soft-state.js";
import type { SoftState } from "../lib/backends/soft-state.js";
import { createWebhookPush } from "../lib/backends/webhook-push.js";
import type { Config } from "../lib/config.js";
import { boundaryInterceptor } from "../lib/interceptors.js";
import type { Logger } from "../lib/logger.js";
import { type Metrics, metricsInterceptor } from "../lib/metrics.js";
import type { StoreClient } from "./router/store-client.js";

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
