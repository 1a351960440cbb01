import { setTimeout as sleep } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
import type { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import type { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { Logger } from "../logger.js";
import type { PushNotifier } from "./push.js";

/** Why a notification was dropped: the backlog was full, or it alone exceeds `maxHeld`. */
export type PushDropReason = "full" | "oversized";

/** One device to notify. */
export interface PushDevice {
  userId: string;
  deviceId: string;
  platform: DevicePlatform;
  pushToken: string;
}

/** What a sender delivers: a pointer to the event, never its content, and the devices. */
export interface PushDelivery {
  conversationId: string;
  seq: string;
  eventId: string;
  senderUserId: string;
  devices: PushDevice[];
}

/**
 * Delivers one notification to the devices it lists. Resolves to the devices
 * worth another attempt (a transient failure), [] when done; a throw counts
 * as a transient failure for all of them. Permanent refusals are the
 * sender's to log or act on. `signal` aborts at close().
 */
export type PushSender = (delivery: PushDelivery, signal: AbortSignal) => Promise<PushDevice[]>;

export interface PushQueueOptions {
  store: Client<typeof StoreService>;
  log: Logger;
  /** Attempts per notification, with exponential backoff between them. */
  attempts?: number;
  /** Wait before the second attempt; doubles for each one after. */
  retryDelayMs?: number;
  /**
   * Notifications being worked on at once, each looking up its targets in the
   * store and then sending; so also the bound on concurrent store lookups.
   */
  concurrency?: number;
  /** Notifications waiting for a slot; past it, new ones are dropped. */
  maxQueued?: number;
  /**
   * Recipients and devices held at once, waiting or in flight: a user id
   * waiting for its lookup counts one, and so does a device being sent to.
   * Past it, new notifications are dropped.
   */
  maxHeld?: number;
  /** Called for each dropped notification, e.g. to count it in a metric. */
  onDrop?: (reason: PushDropReason) => void;
}

/** A notification waiting for a slot: ids only, not the event, whose content may be large. */
interface Pending {
  conversationId: string;
  seq: string;
  eventId: string;
  senderUserId: string;
  userIds: string[];
  connected: Set<string>;
  weight: number;
}

/**
 * The bounded work behind every push backend: looks up the recipients'
 * devices with a token and no live session, hands them to `sender`, and
 * retries what it gives back.
 *
 * Best effort: messages are durable and synced when a device reconnects, so
 * push may lose notifications rather than hold up sends or grow without
 * bound. When the sender is slow, what exceeds `maxQueued` or `maxHeld` is
 * dropped with one log line per episode and `onDrop`.
 */
export function createPushQueue(opts: PushQueueOptions, sender: PushSender): PushNotifier {
  const attempts = opts.attempts ?? 3;
  const retryDelayMs = opts.retryDelayMs ?? 200;
  const concurrency = opts.concurrency ?? 16;
  const maxQueued = opts.maxQueued ?? 10_000;
  // About 30 MiB if all of it were devices being sent to (~300 bytes each).
  const maxHeld = opts.maxHeld ?? 100_000;
  const queue: Pending[] = [];
  const running = new Set<Promise<void>>();
  const stop = new AbortController();
  let held = 0;
  // Drops since the last admitted notification: one log line per episode, not per send.
  let dropped = 0;

  function drop(reason: PushDropReason, p: { conversationId: string; weight: number }) {
    opts.onDrop?.(reason);
    if (reason === "oversized") {
      opts.log.warn(
        { conversationId: p.conversationId, size: p.weight, maxHeld },
        "push notification exceeds maxHeld by itself, dropping",
      );
    } else if (dropped++ === 0) {
      opts.log.warn(
        { conversationId: p.conversationId, queued: queue.length, held, maxQueued, maxHeld },
        "push backlog full, dropping notifications until it drains",
      );
    }
  }

  /**
   * The work's result, or undefined once close() was called: the work may
   * not heed the signal. Its abort listener goes when it settles, so work
   * leaves nothing behind on a long-lived signal.
   */
  function untilStopped<T>(work: Promise<T>): Promise<T | undefined> {
    if (stop.signal.aborted) return Promise.resolve(undefined);
    return new Promise<T | undefined>((resolve, reject) => {
      const onStop = () => resolve(undefined);
      stop.signal.addEventListener("abort", onStop, { once: true });
      work.then(
        (v) => {
          stop.signal.removeEventListener("abort", onStop);
          resolve(v);
        },
        (err: unknown) => {
          stop.signal.removeEventListener("abort", onStop);
          reject(err);
        },
      );
    });
  }

  /** The devices to notify, or undefined when there are none. */
  async function targets(p: Pending): Promise<PushDevice[] | undefined> {
    const res = await untilStopped(
      opts.store.loadPushTargets({ userIds: p.userIds }, { signal: stop.signal }),
    );
    if (!res) return undefined;
    const devices = res.targets
      .filter((t) => !p.connected.has(t.deviceId))
      .map((t) => ({
        userId: t.userId,
        deviceId: t.deviceId,
        platform: t.platform,
        pushToken: t.pushToken,
      }));
    return devices.length > 0 ? devices : undefined;
  }

  async function deliver(p: Pending, devices: PushDevice[]) {
    let left = devices;
    for (let attempt = 1; ; attempt++) {
      let failure: unknown;
      try {
        const again = await untilStopped(
          sender(
            {
              conversationId: p.conversationId,
              seq: p.seq,
              eventId: p.eventId,
              senderUserId: p.senderUserId,
              devices: left,
            },
            stop.signal,
          ),
        );
        if (again === undefined || again.length === 0) return;
        left = again;
      } catch (err) {
        failure = err;
      }
      if (stop.signal.aborted) return;
      if (attempt >= attempts) {
        opts.log.warn(
          { err: failure, conversationId: p.conversationId, seq: p.seq, devices: left.length },
          "push failed",
        );
        return;
      }
      try {
        await sleep(retryDelayMs * 2 ** (attempt - 1), undefined, { signal: stop.signal });
      } catch {
        return;
      }
    }
  }

  async function run(p: Pending) {
    let weight = p.weight;
    try {
      const devices = await targets(p);
      if (devices === undefined || stop.signal.aborted) return;
      // Users with several devices can outweigh their ids: count what is sent.
      held += devices.length - weight;
      weight = devices.length;
      if (held > maxHeld) return drop("full", p);
      await deliver(p, devices);
    } catch (err) {
      if (!stop.signal.aborted) opts.log.warn({ err }, "push targets lookup failed");
    } finally {
      held -= weight;
    }
  }

  function pump() {
    while (!stop.signal.aborted && running.size < concurrency && queue.length > 0) {
      const task = run(queue.shift()!).finally(() => {
        running.delete(task);
        pump();
      });
      running.add(task);
    }
  }

  return {
    async notify(event, recipientUserIds, connectedDeviceIds) {
      if (stop.signal.aborted || recipientUserIds.length === 0) return;
      const p: Pending = {
        conversationId: event.conversationId,
        seq: event.seq.toString(),
        eventId: event.eventId,
        senderUserId: event.actorUserId,
        userIds: recipientUserIds,
        connected: connectedDeviceIds,
        weight: recipientUserIds.length + connectedDeviceIds.size,
      };
      if (p.weight > maxHeld) return drop("oversized", p);
      if (queue.length >= maxQueued || held + p.weight > maxHeld) return drop("full", p);
      if (dropped > 0) {
        opts.log.info({ dropped }, "push backlog has room again");
        dropped = 0;
      }
      held += p.weight;
      queue.push(p);
      pump();
    },
    /**
     * Drops what is queued and aborts lookups, sends and retry waits in
     * flight: once it resolves, nothing more is sent.
     */
    async close() {
      stop.abort();
      for (const p of queue.splice(0)) held -= p.weight;
      await Promise.all([...running]);
    },
  };
}
