import { createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { ChatService } from "../../gen/chat/v1/chat_service_pb.js";
import { PartnerService } from "../../gen/chat/v1/partner_service_pb.js";
import type { createPartnerAuth } from "../../lib/auth/partner.js";
import { TokenError, type TokenService } from "../../lib/auth/tokens.js";
import type { RateLimiter } from "../../lib/backends/soft-state.js";
import type { Config } from "../../lib/config.js";
import { fail } from "../../lib/errors.js";
import type { StoreClient } from "../router/store-client.js";

/** The verified identity behind a ChatService call. */
export interface Caller {
  userId: string;
  deviceId: string;
  tokenExpiresAtMs: number;
}

export const callerKey = createContextKey<Caller | undefined>(undefined, {
  description: "verified user and device",
});

/** The caller of a ChatService handler; the auth interceptor guarantees it is set. */
export function caller(ctx: HandlerContext): Caller {
  const c = ctx.values.get(callerKey);
  if (!c) throw fail.unauthenticated("not authenticated");
  return c;
}

/**
 * Remembers which devices are live for a short while so a token check costs
 * no store round trip; revocations evict immediately.
 */
export function createDeviceCheck(store: StoreClient, ttlMs = 30_000) {
  /** `epoch`: the eviction count when the device was read from the store. */
  const live = new Map<string, { userId: string; untilMs: number; epoch: number }>();
  // Bumped on every eviction: a lookup that raced a revocation must not
  // re-cache the device as live.
  let evictions = 0;
  const cached = (userId: string, deviceId: string) => {
    const hit = live.get(deviceId);
    return hit && hit.userId === userId && hit.untilMs > Date.now() ? hit : undefined;
  };
  async function assertLive(userId: string, deviceId: string, fresh = false) {
    if (!fresh && cached(userId, deviceId)) return;
    const seen = evictions;
    const { device } = await store.loadDevice({ deviceId });
    if (!device || device.userId !== userId) throw fail.unauthenticated("unknown device");
    if (device.revokedAt) throw fail.unauthenticated("device is revoked");
    if (seen !== evictions) return;
    live.set(deviceId, { userId, untilMs: Date.now() + ttlMs, epoch: seen });
    if (live.size > 100_000) live.clear();
  }
  return {
    /** Throws UNAUTHENTICATED unless the device exists, is the user's, and is not revoked. */
    assertLive,
    /**
     * assertLive for a stream that was just registered, which revocations now
     * reach. Every revocation is broadcast to every edge and evicts here: if
     * none was seen since the device was last read, one that raced the
     * registration is still to come and will end the stream; else read again.
     */
    async assertStillLive(userId: string, deviceId: string) {
      if (cached(userId, deviceId)?.epoch === evictions) return;
      await assertLive(userId, deviceId, true);
    },
    evict(deviceId: string) {
      evictions++;
      live.delete(deviceId);
    },
  };
}

export type DeviceCheck = ReturnType<typeof createDeviceCheck>;

const bearer = (header: string | null | undefined) =>
  header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;

/** Verifies a user token and its device; throws UNAUTHENTICATED. */
export async function authenticate(
  deps: { tokens: TokenService; devices: DeviceCheck },
  token: string | undefined,
): Promise<Caller> {
  if (!token) throw fail.unauthenticated("missing bearer token");
  const claims = await deps.tokens.verify(token).catch((err: unknown) => {
    throw fail.unauthenticated(err instanceof TokenError ? err.message : "invalid token", err);
  });
  await deps.devices.assertLive(claims.userId, claims.deviceId);
  return {
    userId: claims.userId,
    deviceId: claims.deviceId,
    tokenExpiresAtMs: claims.expiresAtMs,
  };
}

export { bearer };

export interface RequestBudget {
  limiter: RateLimiter;
  perSecond: number;
  burst: number;
}

/** The per-user request budget the config sets, spent by calls, stream opens and stream frames. */
export const requestBudget = (limiter: RateLimiter, limits: Config["limits"]): RequestBudget => ({
  limiter,
  perSecond: limits.requestsPerSecond,
  burst: limits.requestBurst,
});

/** Spends one token of the user's request budget; RESOURCE_EXHAUSTED when it is spent. */
export async function spendRequestBudget(deps: RequestBudget, userId: string): Promise<void> {
  if (!(await deps.limiter.take(`req:${userId}`, deps.perSecond, deps.burst))) {
    throw fail.exhausted("request rate limit exceeded, retry later");
  }
}

/**
 * Spends one token of the caller's request budget per call (a stream counts
 * once when it opens; its frames spend as their unary calls do, see duplex.ts).
 * Runs after authentication, so the budget is per user, not per connection.
 */
export function requestLimitInterceptor(deps: RequestBudget): Interceptor {
  return (next) => async (req) => {
    const who = req.contextValues.get(callerKey);
    if (who) await spendRequestBudget(deps, who.userId);
    return next(req);
  };
}

/**
 * Authenticates every call before its handler runs (streams included):
 * ChatService needs a user token bound to a live device, PartnerService
 * needs partner credentials. Other services (health, dev) are open.
 */
export function authInterceptor(deps: {
  tokens: TokenService;
  partners: ReturnType<typeof createPartnerAuth>;
  devices: DeviceCheck;
}): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName === ChatService.typeName) {
      const who = await authenticate(deps, bearer(req.header.get("authorization")));
      req.contextValues.set(callerKey, who);
    } else if (req.service.typeName === PartnerService.typeName) {
      if (!deps.partners(req.header.get("authorization"))) {
        throw fail.unauthenticated("invalid partner credentials");
      }
    }
    return next(req);
  };
}
