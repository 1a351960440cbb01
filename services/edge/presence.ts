import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ServerFrameSchema } from "../../gen/chat/v1/chat_service_pb.js";
import { type Presence, PresenceSchema } from "../../gen/chat/v1/model_pb.js";
import type { DeviceAddress, PresenceRecord, SoftState } from "../../lib/backends/soft-state.js";
import { deliverToUsers } from "../../lib/delivery.js";
import { fail } from "../../lib/errors.js";
import type { Logger } from "../../lib/logger.js";
import { checkUserIds } from "../../lib/validate.js";
import type { StoreClient } from "../router/store-client.js";
import type { Caller } from "./auth.js";

const view = (p: PresenceRecord): Presence =>
  create(PresenceSchema, {
    userId: p.userId,
    online: p.online,
    ...(p.lastSeenMs ? { lastSeenAt: timestampFromMs(p.lastSeenMs) } : {}),
  });

/**
 * Lazy presence: heartbeats keep a user online for ttlMs; changes go only to
 * devices that watch the user (and share a conversation with them).
 */
export function createPresence(deps: {
  soft: SoftState;
  store: StoreClient;
  ttlMs: number;
  watchMax: number;
  log: Logger;
}) {
  async function announce(p: PresenceRecord) {
    let watchers = await deps.soft.presence.watchers(p.userId);
    if (watchers.length === 0) return;
    // Visibility was checked at watch time; watchers who no longer share a
    // conversation with the user must stop hearing about them.
    const others = [...new Set(watchers.map((w) => w.userId))].filter((u) => u !== p.userId);
    if (others.length > 0) {
      const { userIds } = await deps.store.filterPeers({
        userId: p.userId,
        candidateUserIds: others,
      });
      const allowed = new Set([p.userId, ...userIds]);
      watchers = watchers.filter((w) => allowed.has(w.userId));
      if (watchers.length === 0) return;
    }
    const frame = create(ServerFrameSchema, { frame: { case: "presence", value: view(p) } });
    await deliverToUsers(
      deps.soft,
      frame,
      [...new Set(watchers.map((w) => w.userId))],
      new Set(watchers.map((w) => w.deviceId)),
    );
  }

  /** Only users who share a conversation with the caller (or the caller) are visible. */
  async function visible(who: Caller, userIds: string[]) {
    const ids = checkUserIds("user_ids", userIds, deps.watchMax);
    const others = ids.filter((u) => u !== who.userId);
    if (others.length > 0) {
      const { userIds: shared } = await deps.store.filterPeers({
        userId: who.userId,
        candidateUserIds: others,
      });
      if (shared.length !== others.length) {
        throw fail.denied("presence is visible only for users you share a conversation with");
      }
    }
    return ids;
  }

  return {
    async heartbeat(userId: string, deviceId: string) {
      const now = Date.now();
      if (await deps.soft.presence.heartbeat(userId, deviceId, now, deps.ttlMs)) {
        await announce({ userId, online: true, lastSeenMs: now });
      }
    },
    /** Turns users offline whose heartbeats expired, and tells their watchers. */
    async sweep() {
      for (const gone of await deps.soft.presence.expire(Date.now())) {
        await announce({ userId: gone.userId, online: false, lastSeenMs: gone.lastSeenMs }).catch(
          (err: unknown) => deps.log.warn({ err }, "presence announce failed"),
        );
      }
    },
    async get(who: Caller, userIds: string[]): Promise<Presence[]> {
      const ids = await visible(who, userIds);
      return (await deps.soft.presence.get(ids, Date.now())).map(view);
    },
    async watch(who: Caller, userIds: string[]): Promise<Presence[]> {
      const ids = await visible(who, userIds);
      const watcher: DeviceAddress = { userId: who.userId, deviceId: who.deviceId };
      if (!(await deps.soft.presence.watch(watcher, ids, deps.watchMax))) {
        throw fail.exhausted(`a device can watch at most ${deps.watchMax} users`);
      }
      return (await deps.soft.presence.get(ids, Date.now())).map(view);
    },
    async unwatch(who: Caller, userIds: string[]) {
      const ids = checkUserIds("user_ids", userIds, deps.watchMax);
      await deps.soft.presence.unwatch({ userId: who.userId, deviceId: who.deviceId }, ids);
    },
    /** Drops a device's watches once its last stream on this edge has ended. */
    async release(device: DeviceAddress) {
      await deps.soft.presence.unwatchAll(device);
    },
  };
}

export type PresenceService = ReturnType<typeof createPresence>;
