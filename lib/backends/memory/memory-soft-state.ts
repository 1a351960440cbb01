import type { EdgeMessage } from "../../../gen/chat/internal/v1/edge_pb.js";
import type { DeviceAddress, DeviceLocation, PresenceRecord, SoftState } from "../soft-state.js";

const deviceKey = (a: DeviceAddress) => `${a.userId}\u0000${a.deviceId}`;

/**
 * Soft state for one process: connection registry, edge bus, presence,
 * sequencer and rate limits, all in memory. Rate-limit buckets, the only part
 * that grows with callers rather than with connections, are pruned.
 */
export function createMemorySoftState(): SoftState {
  // userId -> deviceId -> edgeId
  const connections = new Map<string, Map<string, string>>();
  const subscribers = new Map<string, (m: EdgeMessage) => void>();

  // userId -> deviceId -> expiresAtMs, plus last seen and online flags
  const heartbeats = new Map<string, Map<string, number>>();
  const lastSeen = new Map<string, number>();
  const online = new Set<string>();
  const watchersOf = new Map<string, Map<string, DeviceAddress>>();
  const watching = new Map<string, Set<string>>();

  const counters = new Map<string, bigint>();
  const seeding = new Map<string, Promise<bigint>>();
  const buckets = new Map<string, { tokens: number; atMs: number }>();

  const unwatch = (watcher: DeviceAddress, userIds: string[]) => {
    const key = deviceKey(watcher);
    const current = watching.get(key);
    for (const u of userIds) {
      current?.delete(u);
      const w = watchersOf.get(u);
      w?.delete(key);
      if (w?.size === 0) watchersOf.delete(u);
    }
    if (current?.size === 0) watching.delete(key);
  };

  return {
    registry: {
      async attach({ userId, deviceId, edgeId }) {
        const devices = connections.get(userId) ?? new Map<string, string>();
        connections.set(userId, devices);
        devices.set(deviceId, edgeId);
      },
      async detach({ userId, deviceId, edgeId }) {
        const devices = connections.get(userId);
        if (devices?.get(deviceId) !== edgeId) return;
        devices.delete(deviceId);
        if (devices.size === 0) connections.delete(userId);
      },
      async locate(userIds) {
        const out: DeviceLocation[] = [];
        for (const userId of userIds) {
          const devices = connections.get(userId);
          if (!devices) continue;
          for (const [deviceId, edgeId] of devices) out.push({ userId, deviceId, edgeId });
        }
        return out;
      },
    },
    bus: {
      async publish(edgeId, message) {
        const handler = subscribers.get(edgeId);
        handler?.(message);
        return handler !== undefined;
      },
      async broadcast(message) {
        for (const h of subscribers.values()) h(message);
      },
      async subscribe(edgeId, handler) {
        subscribers.set(edgeId, handler);
        return async () => {
          if (subscribers.get(edgeId) === handler) subscribers.delete(edgeId);
        };
      },
    },
    presence: {
      async heartbeat(userId, deviceId, nowMs, ttlMs) {
        const devices = heartbeats.get(userId) ?? new Map<string, number>();
        heartbeats.set(userId, devices);
        devices.set(deviceId, nowMs + ttlMs);
        lastSeen.set(userId, nowMs);
        if (online.has(userId)) return false;
        online.add(userId);
        return true;
      },
      async expire(nowMs) {
        const gone: { userId: string; lastSeenMs: number }[] = [];
        for (const [userId, devices] of heartbeats) {
          for (const [deviceId, exp] of devices) if (exp <= nowMs) devices.delete(deviceId);
          if (devices.size === 0) {
            heartbeats.delete(userId);
            if (online.delete(userId)) gone.push({ userId, lastSeenMs: lastSeen.get(userId) ?? 0 });
          }
        }
        return gone;
      },
      async get(userIds, nowMs) {
        return userIds.map((userId): PresenceRecord => {
          const devices = heartbeats.get(userId);
          const live = devices ? [...devices.values()].some((exp) => exp > nowMs) : false;
          return { userId, online: live, lastSeenMs: lastSeen.get(userId) ?? 0 };
        });
      },
      async watch(watcher, userIds, max) {
        const key = deviceKey(watcher);
        const current = watching.get(key) ?? new Set<string>();
        const added = userIds.filter((u) => !current.has(u));
        if (current.size + added.length > max) return false;
        for (const u of added) {
          current.add(u);
          const w = watchersOf.get(u) ?? new Map<string, DeviceAddress>();
          watchersOf.set(u, w);
          w.set(key, watcher);
        }
        watching.set(key, current);
        return true;
      },
      async unwatch(watcher, userIds) {
        unwatch(watcher, userIds);
      },
      async unwatchAll(watcher) {
        const current = watching.get(deviceKey(watcher));
        if (current) unwatch(watcher, [...current]);
      },
      async watchers(userId) {
        return [...(watchersOf.get(userId)?.values() ?? [])];
      },
    },
    sequencer: {
      async next(conversationId, durableHead) {
        let current = counters.get(conversationId);
        if (current === undefined) {
          // Single-flight the seed so concurrent first calls agree.
          let seed = seeding.get(conversationId);
          if (!seed) {
            seed = durableHead();
            seeding.set(conversationId, seed);
          }
          try {
            const head = await seed;
            current = counters.get(conversationId) ?? head;
          } finally {
            seeding.delete(conversationId);
          }
        }
        const next = current + 1n;
        counters.set(conversationId, next);
        return next;
      },
      async reset(conversationId) {
        counters.delete(conversationId);
      },
    },
    limiter: {
      async take(key, perSecond, burst) {
        const now = performance.now();
        const b = buckets.get(key) ?? { tokens: burst, atMs: now };
        b.tokens = Math.min(burst, b.tokens + ((now - b.atMs) / 1000) * perSecond);
        b.atMs = now;
        buckets.set(key, b);
        if (buckets.size > 100_000) {
          for (const [k, v] of buckets) if (v.tokens >= burst) buckets.delete(k);
        }
        if (b.tokens < 1) return false;
        b.tokens -= 1;
        return true;
      },
    },
    async close() {
      subscribers.clear();
    },
  };
}
