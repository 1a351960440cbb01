import { createHmac } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
import type { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { Logger } from "../logger.js";
import type { PushNotifier } from "./push.js";

/** Why a notification was dropped: the backlog was full, or it alone exceeds `maxHeld`. */
export type PushDropReason = "full" | "oversized";

export interface WebhookPushOptions {
  /** The push gateway that turns notifications into FCM/APNs/Web Push calls. */
  url: string;
  /** Signs each body: `x-chat-signature: sha256=<hex HMAC of the raw body>`. */
  secret: string;
  store: Client<typeof StoreService>;
  log: Logger;
  timeoutMs?: number;
  /** Attempts per notification, with exponential backoff between them. */
  attempts?: number;
  /** Wait before the second attempt; doubles for each one after. */
  retryDelayMs?: number;
  /**
   * Notifications being worked on at once, each looking up its targets in the
   * store and then posting; so also the bound on concurrent store lookups.
   */
  concurrency?: number;
  /** Notifications waiting for a slot; past it, new ones are dropped. */
  maxQueued?: number;
  /**
   * Recipients and devices held at once, waiting or in flight: a user id
   * waiting for its lookup counts one, and so does a device being posted.
   * Past it, new notifications are dropped.
   */
  maxHeld?: number;
  /** Called for each dropped notification, e.g. to count it in a metric. */
  onDrop?: (reason: PushDropReason) => void;
}

/** The JSON body the gateway receives (snake_case, like the proto). */
export interface PushNotification {
  conversation_id: string;
  seq: string;
  event_id: string;
  sender_user_id: string;
  devices: { user_id: string; device_id: string; platform: string; push_token: string }[];
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

const platformName = (p: DevicePlatform) => (DevicePlatform[p] ?? "UNSPECIFIED").toLowerCase();

/**
 * Push through a gateway over HTTPS, as Matrix homeservers do: one signed
 * POST per new message listing the recipients' devices that have a push
 * token and no live session. The body carries a pointer to the event, never
 * its content: the app fetches it when it wakes.
 *
 * Best effort: messages are durable and synced when a device reconnects, so
 * push may lose notifications rather than hold up sends or grow without
 * bound. Failures are retried, then logged; when the gateway is slow, what
 * exceeds `maxQueued` or `maxHeld` is dropped with a log line and `onDrop`.
 */
export function createWebhookPush(opts: WebhookPushOptions): PushNotifier {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const attempts = opts.attempts ?? 3;
  const retryDelayMs = opts.retryDelayMs ?? 200;
  const concurrency = opts.concurrency ?? 16;
  const maxQueued = opts.maxQueued ?? 10_000;
  // About 30 MiB if all of it were devices being posted (~300 bytes each).
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
   * The lookup's result, or undefined once close() was called: the lookup may
   * not heed the signal. Its abort listener goes when it settles, so lookups
   * leave nothing behind on a long-lived signal.
   */
  function untilStopped<T>(lookup: Promise<T>): Promise<T | undefined> {
    if (stop.signal.aborted) return Promise.resolve(undefined);
    return new Promise<T | undefined>((resolve, reject) => {
      const onStop = () => resolve(undefined);
      stop.signal.addEventListener("abort", onStop, { once: true });
      lookup.then(
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

  /** The notification's body and device count, or undefined when there is nothing to post. */
  async function prepare(p: Pending): Promise<{ body: string; devices: number } | undefined> {
    const res = await untilStopped(
      opts.store.loadPushTargets({ userIds: p.userIds }, { signal: stop.signal }),
    );
    if (!res) return undefined;
    const n: PushNotification = {
      conversation_id: p.conversationId,
      seq: p.seq,
      event_id: p.eventId,
      sender_user_id: p.senderUserId,
      devices: res.targets
        .filter((t) => !p.connected.has(t.deviceId))
        .map((t) => ({
          user_id: t.userId,
          device_id: t.deviceId,
          platform: platformName(t.platform),
          push_token: t.pushToken,
        })),
    };
    if (n.devices.length === 0) return undefined;
    return { body: JSON.stringify(n), devices: n.devices.length };
  }

  async function post(p: Pending, body: string) {
    const signature = createHmac("sha256", opts.secret).update(body).digest("hex");
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await fetch(opts.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-chat-signature": `sha256=${signature}`,
          },
          body,
          signal: AbortSignal.any([stop.signal, AbortSignal.timeout(timeoutMs)]),
        });
        await res.body?.cancel();
        if (res.ok) return;
        // Other 4xx: the gateway refused this notification; retrying will not help.
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          opts.log.warn({ status: res.status }, "push gateway refused a notification");
          return;
        }
        throw new Error(`push gateway answered ${res.status}`);
      } catch (err) {
        if (stop.signal.aborted) return;
        if (attempt >= attempts) {
          opts.log.warn({ err, conversationId: p.conversationId, seq: p.seq }, "push failed");
          return;
        }
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
      const prepared = await prepare(p);
      if (prepared === undefined || stop.signal.aborted) return;
      // Users with several devices can outweigh their ids: count what is posted.
      held += prepared.devices - weight;
      weight = prepared.devices;
      if (held > maxHeld) return drop("full", p);
      await post(p, prepared.body);
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
     * Drops what is queued and aborts lookups, requests and retry waits in
     * flight: once it resolves, nothing more is posted.
     */
    async close() {
      stop.abort();
      for (const p of queue.splice(0)) held -= p.weight;
      await Promise.all([...running]);
    },
  };
}
