import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { EdgeMessage } from "../../gen/chat/internal/v1/edge_pb.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import type { Config } from "../../lib/config.js";
import { fail } from "../../lib/errors.js";
import type { Logger } from "../../lib/logger.js";
import type { Metrics } from "../../lib/metrics.js";
import type { StoreClient } from "../router/store-client.js";
import type { Caller, DeviceCheck } from "./auth.js";
import type { PresenceService } from "./presence.js";
import { frame, revokedError, Session, type SessionKind, type SessionOptions } from "./session.js";

/**
 * The sessions held by one edge: stream caps per user and device, the
 * device -> edge registry entries, delivery of bus messages to sessions,
 * and a sweeper for heartbeats, slow streams, token expiry and presence.
 */
export function createSessions(deps: {
  edgeId: string;
  config: Config;
  soft: SoftState;
  store: StoreClient;
  presence: PresenceService;
  devices: DeviceCheck;
  log: Logger;
  metrics: Metrics;
}) {
  const { limits, session: timing } = deps.config;
  const byDevice = new Map<string, Set<Session>>();
  /** Set once stop() began: a stream that comes later is refused with it. */
  let stopped: ConnectError | undefined;
  const perUser = new Map<string, number>();
  let sweeper: NodeJS.Timeout | undefined;
  let unsubscribe: (() => Promise<void>) | undefined;
  // One options object for every session: per-session copies and closures add up.
  const sessionOptions: SessionOptions = {
    store: deps.store,
    outboxMaxFrames: limits.outboxMaxFrames,
    gapWaitMs: timing.gapWaitMs,
    syncLimit: timing.syncLimit,
    baselineWindowMs: 120_000,
    log: deps.log,
    onShed: (frame) => deps.metrics.shed.inc({ frame }),
  };

  const all = function* () {
    for (const set of byDevice.values()) yield* set;
  };

  /**
   * Opens a stream for `who` within the stream caps and registers its device.
   * `binary`: the transport writes frames in binary protobuf (see Session).
   */
  async function open(who: Caller, kind: SessionKind, binary: boolean): Promise<Session> {
    if (stopped) throw stopped;
    const mine = byDevice.get(who.deviceId);
    if ((mine?.size ?? 0) >= limits.streamsPerDevice) {
      throw fail.exhausted(`at most ${limits.streamsPerDevice} streams per device`);
    }
    if ((perUser.get(who.userId) ?? 0) >= limits.streamsPerUser) {
      throw fail.exhausted(`at most ${limits.streamsPerUser} streams per user`);
    }
    const s = new Session(who, kind, sessionOptions, binary);
    if (mine) mine.add(s);
    else byDevice.set(who.deviceId, new Set([s]));
    perUser.set(who.userId, (perUser.get(who.userId) ?? 0) + 1);
    deps.metrics.sessions.inc();
    try {
      // Registered before any sync read, so nothing committed later is missed.
      await deps.soft.registry.attach({ ...who, edgeId: deps.edgeId });
      // A revocation between authentication and registration found no
      // session to end; check again now that revocations will reach this one
      // (a store read unless none was seen since the device was last read).
      await deps.devices.assertStillLive(who.userId, who.deviceId);
      await deps.presence.heartbeat(who.userId, who.deviceId);
    } catch (err) {
      await release(s);
      throw err;
    }
    s.push(
      frame({
        case: "ready",
        value: {
          sessionId: s.id,
          userId: who.userId,
          deviceId: who.deviceId,
          heartbeatIntervalMs: timing.heartbeatIntervalMs,
        },
      }),
    );
    return s;
  }

  async function release(s: Session) {
    s.close();
    const set = byDevice.get(s.caller.deviceId);
    if (!set?.delete(s)) return;
    deps.metrics.sessions.dec();
    const n = (perUser.get(s.caller.userId) ?? 1) - 1;
    if (n > 0) perUser.set(s.caller.userId, n);
    else perUser.delete(s.caller.userId);
    if (set.size > 0) return;
    byDevice.delete(s.caller.deviceId);
    const device = { userId: s.caller.userId, deviceId: s.caller.deviceId };
    await Promise.all([
      deps.soft.registry.detach({ ...device, edgeId: deps.edgeId }),
      deps.presence.release(device),
    ]).catch((err: unknown) => deps.log.warn({ err }, "session release failed"));
  }

  function onMessage(msg: EdgeMessage) {
    const k = msg.kind;
    if (k.case === "delivery") {
      const f = k.value.frame;
      if (!f) return;
      for (const deviceId of k.value.deviceIds) {
        const set = byDevice.get(deviceId);
        if (!set) continue;
        for (const s of set) {
          if (f.frame.case === "event") s.offer(f.frame.value);
          else s.push(f);
        }
      }
    } else if (k.case === "deviceRevoked") {
      deps.devices.evict(k.value.deviceId);
      for (const s of byDevice.get(k.value.deviceId) ?? []) s.close(revokedError());
    }
  }

  function sweep() {
    const now = Date.now();
    const silentAfter = 2 * timing.heartbeatIntervalMs;
    for (const s of all()) {
      s.ackOverdue(now);
      if (now - s.lastHeardMs > silentAfter) {
        s.close(new ConnectError("no heartbeat", Code.DeadlineExceeded));
      } else if (s.caller.tokenExpiresAtMs <= now) {
        s.close(new ConnectError("token expired", Code.Unauthenticated));
      } else if (s.laggingSinceMs && now - s.laggingSinceMs > limits.lagTimeoutMs) {
        s.close(new ConnectError("client reads too slowly", Code.ResourceExhausted));
      } else if (
        s.kind === "subscribe" &&
        now - s.lastHeartbeatSentMs >= timing.heartbeatIntervalMs
      ) {
        s.lastHeartbeatSentMs = now;
        s.push(frame({ case: "heartbeat", value: { serverTime: timestampFromMs(now) } }));
      }
    }
    void deps.presence
      .sweep()
      .catch((err: unknown) => deps.log.warn({ err }, "presence sweep failed"));
  }

  return {
    open,
    release,
    /** A heartbeat from the device: its streams are alive and its registry entry fresh. */
    async touch(who: Caller) {
      const set = byDevice.get(who.deviceId);
      for (const s of set ?? []) s.heard();
      if (set?.size) await deps.soft.registry.attach({ ...who, edgeId: deps.edgeId });
    },
    async start() {
      unsubscribe = await deps.soft.bus.subscribe(deps.edgeId, onMessage);
      const every = Math.max(
        50,
        Math.min(1000, timing.heartbeatIntervalMs / 4, timing.presenceTtlMs / 4),
      );
      sweeper = setInterval(sweep, every);
      sweeper.unref();
    },
    /** Ends every stream with the given error (UNAVAILABLE on shutdown), and refuses new ones with it. */
    async stop(err: ConnectError) {
      stopped = err;
      if (sweeper) clearInterval(sweeper);
      for (const s of [...all()]) s.close(err);
      await Promise.all([...all()].map(release));
      await unsubscribe?.();
    },
    get count() {
      let n = 0;
      for (const set of byDevice.values()) n += set.size;
      return n;
    },
  };
}

export type Sessions = ReturnType<typeof createSessions>;
