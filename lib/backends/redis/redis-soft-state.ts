import { createHash } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { type EdgeMessage, EdgeMessageSchema } from "../../../gen/chat/internal/v1/edge_pb.js";
import { BackendUnavailableError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import { createMemorySoftState } from "../memory/memory-soft-state.js";
import type { DeviceAddress, DeviceLocation, PresenceRecord, SoftState } from "../soft-state.js";

export interface RedisSoftStateOptions {
  /** redis://[user:password@]host:port[/db] */
  url: string;
  /** Prefixes every key and channel, so several deployments (or tests) share one Redis. */
  keyPrefix?: string;
  /** Connection errors go here (ioredis reconnects by itself). */
  log?: Logger;
  /**
   * How long a registry entry lives without a refresh (an attach; the edge
   * re-attaches on every heartbeat), so an edge that died leaves nothing
   * behind for longer.
   */
  registryTtlMs?: number;
}

/** Separates user and device ids inside one Redis value; ids never contain it. */
const sep = "\u0000";
const address = (a: DeviceAddress) => `${a.userId}${sep}${a.deviceId}`;
const parseAddress = (s: string): DeviceAddress => {
  const i = s.indexOf(sep);
  return { userId: s.slice(0, i), deviceId: s.slice(i + 1) };
};

// Presence keys per user: hb (device -> heartbeat expiry ms), last (last seen
// ms). Shared: online (set of users), expiry (zset user -> latest expiry).
const heartbeatScript = `
local hb, last, online, expiry = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, device, now, exp = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('HSET', hb, device, exp)
redis.call('SET', last, now)
redis.call('ZADD', expiry, 'GT', exp, user)
return redis.call('SADD', online, user)
`;

// Atomic per call, so of several sweepers only one sees a user go offline.
const expireScript = `
local online, expiry, prefix = KEYS[1], KEYS[2], ARGV[1]
local now = tonumber(ARGV[2])
local gone = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
  local hb = prefix .. 'p:hb:' .. user
  local fields = redis.call('HGETALL', hb)
  local latest = nil
  for i = 1, #fields, 2 do
    local exp = tonumber(fields[i + 1])
    if exp <= now then
      redis.call('HDEL', hb, fields[i])
    elseif latest == nil or exp > latest then
      latest = exp
    end
  end
  if latest == nil then
    redis.call('ZREM', expiry, user)
    if redis.call('SREM', online, user) == 1 then
      table.insert(gone, user)
      table.insert(gone, redis.call('GET', prefix .. 'p:last:' .. user) or '0')
    end
  else
    redis.call('ZADD', expiry, latest, user)
  end
end
return gone
`;

// All or nothing: refused (0) when the device would watch more than max users.
const watchScript = `
local watching, prefix, watcher, max = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local added = {}
for i = 4, #ARGV do
  if redis.call('SISMEMBER', watching, ARGV[i]) == 0 then table.insert(added, ARGV[i]) end
end
if redis.call('SCARD', watching) + #added > max then return 0 end
for _, user in ipairs(added) do
  redis.call('SADD', watching, user)
  redis.call('SADD', prefix .. 'p:watchers:' .. user, watcher)
end
return 1
`;

const unwatchAllScript = `
local watching, prefix, watcher = KEYS[1], ARGV[1], ARGV[2]
for _, user in ipairs(redis.call('SMEMBERS', watching)) do
  redis.call('SREM', prefix .. 'p:watchers:' .. user, watcher)
end
redis.call('DEL', watching)
return 1
`;

// Expiry on Redis' clock, as every reader compares it with that clock: the
// processes' own clocks may disagree by more than an entry's life.
const attachScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\\0' .. string.format('%.0f', now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

// Compare and delete in one step: a device that attached to another edge meanwhile keeps that entry.
const detachScript = `
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.sub(entry, 1, #ARGV[2] + 1) == ARGV[2] .. '\\0' then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
`;

// Token bucket on Redis' clock, so every process refills alike.
const takeScript = `
local key, rate, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', key, 'tokens', 'at')
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
return ok
`;

// nil while the counter is unknown: the caller seeds it from the durable head.
const nextScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('INCR', KEYS[1])
`;

const seedScript = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])
`;

/**
 * Soft state in Redis, shared by every process that points at it: the
 * connection registry (a hash per user, device -> edge and expiry), the edge
 * bus (pub/sub, a channel per edge and one for broadcasts), presence
 * (heartbeat expiries per device, an expiry index the sweepers share, watch
 * sets both ways), sequence counters (seeded from the durable head, as the
 * interface requires) and token buckets (Lua on Redis' clock; while Redis is
 * away, buckets in this process). Other calls fail with
 * BackendUnavailableError while it is away (UNAVAILABLE to clients).
 *
 * Losing Redis loses no message and reuses no seq: counters reseed from the
 * store's head, and the store refuses a seq it already holds.
 */
export function createRedisSoftState(opts: RedisSoftStateOptions): SoftState {
  const prefix = opts.keyPrefix ?? "chat:";
  const registryTtlMs = opts.registryTtlMs ?? 120_000;
  // While Redis is away a command fails within about two seconds instead of
  // waiting out ioredis' backoff (up to 5 s a reconnect); reconnects try every second at most.
  const redis = new Redis(opts.url, {
    // Commands issued in one event-loop turn go out in one write: a busy
    // process makes several per message (sequence, locate, publish, limits).
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    commandTimeout: 2000,
    retryStrategy: (times) => Math.min(50 * 2 ** (times - 1), 1000),
  });
  const onError = (err: unknown) => opts.log?.warn({ err }, "redis connection error");
  redis.on("error", onError);
  // Pub/sub takes a connection to itself; made on the first subscribe.
  let sub: Redis | undefined;
  const handlers = new Map<string, (m: EdgeMessage) => void>();
  const broadcastChannel = `${prefix}broadcast`;
  const channel = (edgeId: string) => `${prefix}bus:${edgeId}`;
  const seeding = new Map<string, Promise<bigint>>();
  const fallback = createMemorySoftState();
  let limiterDown = false;

  /** Redis' failures are the backend's, not the caller's: UNAVAILABLE at the boundary, retryable. */
  const unavailable = (err: unknown) =>
    err instanceof BackendUnavailableError
      ? err
      : new BackendUnavailableError("soft state (redis) is unavailable", { cause: err });
  const available = <T>(p: Promise<T>): Promise<T> =>
    p.catch((err: unknown) => {
      throw unavailable(err);
    });

  const shas = new Map<string, string>();
  /** EVALSHA, loading the script on first use or after Redis lost it. */
  async function run(script: string, keys: string[], args: (string | number)[]) {
    let sha = shas.get(script);
    if (sha === undefined) {
      sha = createHash("sha1").update(script).digest("hex");
      shas.set(script, sha);
    }
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw unavailable(err);
      return available(redis.eval(script, keys.length, ...keys, ...args));
    }
  }

  const connKey = (userId: string) => `${prefix}conn:${userId}`;
  const writeAttach = ({ userId, deviceId, edgeId }: DeviceLocation) =>
    run(attachScript, [connKey(userId)], [deviceId, edgeId, registryTtlMs]);

  // What this process attached and watched, written again whenever the
  // connection comes back: a Redis that restarted empty would otherwise miss
  // live devices until their next heartbeat, and watches until they re-watch.
  const mine = {
    attached: new Map<string, DeviceLocation>(),
    watching: new Map<string, { watcher: DeviceAddress; users: Set<string> }>(),
  };
  let connectedBefore = false;
  redis.on("ready", () => {
    if (!connectedBefore) {
      connectedBefore = true;
      return;
    }
    const attached = [...mine.attached.values()].map(writeAttach);
    const p = redis.pipeline();
    for (const { watcher, users } of mine.watching.values()) {
      if (users.size === 0) continue;
      p.sadd(k.watching(watcher), ...users);
      for (const u of users) p.sadd(k.watchers(u), address(watcher));
    }
    Promise.all([...attached, p.exec()]).then(
      () =>
        opts.log?.info(
          { devices: mine.attached.size, watchers: mine.watching.size },
          "redis is back: registry entries and watches written again",
        ),
      (err: unknown) => onError(err),
    );
  });
  const k = {
    hb: (u: string) => `${prefix}p:hb:${u}`,
    last: (u: string) => `${prefix}p:last:${u}`,
    watching: (a: DeviceAddress) => `${prefix}p:watching:${address(a)}`,
    watchers: (u: string) => `${prefix}p:watchers:${u}`,
    online: `${prefix}p:online`,
    expiry: `${prefix}p:expiry`,
    seq: (c: string) => `${prefix}seq:${c}`,
    bucket: (key: string) => `${prefix}rl:${key}`,
  };

  return {
    registry: {
      async attach(location) {
        mine.attached.set(address(location), location);
        await writeAttach(location);
      },
      async detach({ userId, deviceId, edgeId }) {
        const local = mine.attached.get(address({ userId, deviceId }));
        if (local?.edgeId === edgeId) mine.attached.delete(address({ userId, deviceId }));
        // Only the edge the device is on may detach it: a stale edge's detach keeps it.
        await run(detachScript, [connKey(userId)], [deviceId, edgeId]);
      },
      async locate(userIds) {
        if (userIds.length === 0) return [];
        // Redis' clock, as the entries' expiries are (see attachScript); one round trip.
        const p = redis.pipeline().time();
        for (const u of userIds) p.hgetall(connKey(u));
        const [clock, ...res] = (await available(p.exec())) ?? [];
        if (!clock || clock[0]) throw unavailable(clock?.[0] ?? new Error("no TIME"));
        const [seconds, micros] = clock[1] as [string, string];
        const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
        const out: DeviceLocation[] = [];
        for (const [i, [err, value]] of res.entries()) {
          if (err) throw unavailable(err);
          for (const [deviceId, entry] of Object.entries(value as Record<string, string>)) {
            const [edgeId, expires] = entry.split(sep);
            if (Number(expires) > now) out.push({ userId: userIds[i]!, deviceId, edgeId: edgeId! });
          }
        }
        return out;
      },
    },
    bus: {
      async publish(edgeId, message) {
        // PUBLISH answers how many subscribers took it.
        const took = await available(
          redis.publish(channel(edgeId), Buffer.from(toBinary(EdgeMessageSchema, message))),
        );
        return took > 0;
      },
      async broadcast(message) {
        await available(
          redis.publish(broadcastChannel, Buffer.from(toBinary(EdgeMessageSchema, message))),
        );
      },
      async subscribe(edgeId, handler) {
        if (!sub) {
          sub = redis.duplicate();
          sub.on("error", onError);
          sub.on("messageBuffer", (ch: Buffer, payload: Buffer) => {
            const name = ch.toString();
            const message = fromBinary(EdgeMessageSchema, payload);
            if (name === broadcastChannel) for (const h of handlers.values()) h(message);
            else handlers.get(name)?.(message);
          });
          await available(sub.subscribe(broadcastChannel));
        }
        const name = channel(edgeId);
        handlers.set(name, handler);
        await available(sub.subscribe(name));
        return async () => {
          if (handlers.get(name) !== handler) return;
          handlers.delete(name);
          await sub?.unsubscribe(name);
        };
      },
    },
    presence: {
      async heartbeat(userId, deviceId, nowMs, ttlMs) {
        const added = await run(
          heartbeatScript,
          [k.hb(userId), k.last(userId), k.online, k.expiry],
          [userId, deviceId, nowMs, nowMs + ttlMs],
        );
        return added === 1;
      },
      async expire(nowMs) {
        const flat = (await run(expireScript, [k.online, k.expiry], [prefix, nowMs])) as string[];
        const gone: { userId: string; lastSeenMs: number }[] = [];
        for (let i = 0; i < flat.length; i += 2) {
          gone.push({ userId: flat[i]!, lastSeenMs: Number(flat[i + 1]) });
        }
        return gone;
      },
      async get(userIds, nowMs) {
        if (userIds.length === 0) return [];
        const p = redis.pipeline();
        for (const u of userIds) p.hvals(k.hb(u)).get(k.last(u));
        const res = (await available(p.exec())) ?? [];
        return userIds.map((userId, i): PresenceRecord => {
          const [e1, exps] = res[2 * i]!;
          const [e2, last] = res[2 * i + 1]!;
          if (e1 || e2) throw unavailable(e1 ?? e2);
          return {
            userId,
            online: (exps as string[]).some((e) => Number(e) > nowMs),
            lastSeenMs: last === null ? 0 : Number(last),
          };
        });
      },
      async watch(watcher, userIds, max) {
        const ok = await run(
          watchScript,
          [k.watching(watcher)],
          [prefix, address(watcher), max, ...userIds],
        );
        if (ok !== 1) return false;
        const local = mine.watching.get(address(watcher)) ?? { watcher, users: new Set<string>() };
        for (const u of userIds) local.users.add(u);
        mine.watching.set(address(watcher), local);
        return true;
      },
      async unwatch(watcher, userIds) {
        if (userIds.length === 0) return;
        const local = mine.watching.get(address(watcher));
        for (const u of userIds) local?.users.delete(u);
        if (local?.users.size === 0) mine.watching.delete(address(watcher));
        const p = redis.pipeline().srem(k.watching(watcher), ...userIds);
        for (const u of userIds) p.srem(k.watchers(u), address(watcher));
        await available(p.exec());
      },
      async unwatchAll(watcher) {
        mine.watching.delete(address(watcher));
        await run(unwatchAllScript, [k.watching(watcher)], [prefix, address(watcher)]);
      },
      async watchers(userId) {
        return (await available(redis.smembers(k.watchers(userId)))).map(parseAddress);
      },
    },
    sequencer: {
      async next(conversationId, durableHead) {
        const key = k.seq(conversationId);
        const known = (await run(nextScript, [key], [])) as number | null;
        if (known !== null) return BigInt(known);
        // Single-flight the seed per process; across processes SET NX picks one seed.
        let seed = seeding.get(conversationId);
        if (!seed) {
          seed = durableHead();
          seeding.set(conversationId, seed);
          seed.then(
            () => seeding.delete(conversationId),
            () => seeding.delete(conversationId),
          );
        }
        const head = await seed;
        return BigInt((await run(seedScript, [key], [head.toString()])) as number);
      },
      async reset(conversationId) {
        await available(redis.del(k.seq(conversationId)));
      },
    },
    limiter: {
      async take(key, perSecond, burst) {
        try {
          const ok = (await run(takeScript, [k.bucket(key)], [perSecond, burst])) === 1;
          if (limiterDown) {
            limiterDown = false;
            opts.log?.info("rate limits are shared through redis again");
          }
          return ok;
        } catch (err) {
          // Limits stay on, per process, while Redis is away: reads that need
          // nothing else from it keep working.
          if (!limiterDown) {
            limiterDown = true;
            opts.log?.warn({ err }, "redis unavailable: rate limits fall back to this process");
          }
          return fallback.limiter.take(key, perSecond, burst);
        }
      },
    },
    async close() {
      handlers.clear();
      await fallback.close();
      await Promise.all([sub?.quit(), redis.quit()]);
    },
  };
}
