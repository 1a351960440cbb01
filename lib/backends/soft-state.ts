import type { EdgeMessage } from "../../gen/chat/internal/v1/edge_pb.js";

/** Where one connected device can be reached. */
export interface DeviceLocation {
  userId: string;
  deviceId: string;
  edgeId: string;
}

export interface DeviceAddress {
  userId: string;
  deviceId: string;
}

/**
 * Which edge holds which device's sessions. Soft state: entries expire
 * unless refreshed, and losing them only delays delivery until the device
 * reconnects and syncs.
 */
export interface ConnectionRegistry {
  /** Records (or refreshes) that the device has a session on the edge. */
  attach(location: DeviceLocation): Promise<void>;
  detach(location: DeviceLocation): Promise<void>;
  /** Every connected device of the given users. */
  locate(userIds: string[]): Promise<DeviceLocation[]>;
}

/** Point-to-point and broadcast messages between router and edges. */
export interface EdgeBus {
  /**
   * Delivers to the edge's subscriber; at most once, in publish order per
   * edge. Resolves false when nobody listens there (the edge is gone, or its
   * subscription dropped): its devices were not reached.
   */
  publish(edgeId: string, message: EdgeMessage): Promise<boolean>;
  /** Delivers to every edge. */
  broadcast(message: EdgeMessage): Promise<void>;
  subscribe(edgeId: string, handler: (message: EdgeMessage) => void): Promise<() => Promise<void>>;
}

export interface PresenceRecord {
  userId: string;
  online: boolean;
  /** 0 when never seen since presence state began. */
  lastSeenMs: number;
}

/**
 * Heartbeat-based presence with lazy watchers: only devices that asked to
 * watch a user hear of that user's changes.
 */
export interface PresenceStore {
  /** Records a device heartbeat; resolves true when the user was offline until now. */
  heartbeat(userId: string, deviceId: string, nowMs: number, ttlMs: number): Promise<boolean>;
  /**
   * Marks offline every user none of whose devices heartbeated within its
   * TTL, and returns each such user once (to one caller, when several edges
   * sweep).
   */
  expire(nowMs: number): Promise<{ userId: string; lastSeenMs: number }[]>;
  get(userIds: string[], nowMs: number): Promise<PresenceRecord[]>;
  /** Adds watches; resolves false (and adds nothing) when the device would exceed `max`. */
  watch(watcher: DeviceAddress, userIds: string[], max: number): Promise<boolean>;
  unwatch(watcher: DeviceAddress, userIds: string[]): Promise<void>;
  unwatchAll(watcher: DeviceAddress): Promise<void>;
  watchers(userId: string): Promise<DeviceAddress[]>;
}

/**
 * Hands out per-conversation sequence numbers. The durable head seeds a
 * counter it does not know, so losing the counters never reuses a seq.
 */
export interface Sequencer {
  next(conversationId: string, durableHead: () => Promise<bigint>): Promise<bigint>;
  /** Forgets the counter; the next call reseeds from the durable head. */
  reset(conversationId: string): Promise<void>;
}

/** Token buckets keyed by caller. */
export interface RateLimiter {
  /** Takes one token; false when the bucket is empty. */
  take(key: string, perSecond: number, burst: number): Promise<boolean>;
}

/**
 * The soft-state role: everything here may be lost without losing a message
 * or reusing a seq. Deduplication is not here: it must be durable, so the
 * event store keeps it (see EventStore.commit and StoreService.FindEvent).
 */
export interface SoftState {
  registry: ConnectionRegistry;
  bus: EdgeBus;
  presence: PresenceStore;
  sequencer: Sequencer;
  limiter: RateLimiter;
  close(): Promise<void>;
}
