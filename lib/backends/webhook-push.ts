import { createHmac } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import type { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { Logger } from "../logger.js";
import type { PushNotifier } from "./push.js";

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
  /** Notifications in flight at once; more wait, and past `maxQueued` are dropped. */
  concurrency?: number;
  maxQueued?: number;
}

/** The JSON body the gateway receives (snake_case, like the proto). */
export interface PushNotification {
  conversation_id: string;
  seq: string;
  event_id: string;
  sender_user_id: string;
  devices: { user_id: string; device_id: string; platform: string; push_token: string }[];
}

const platformName = (p: DevicePlatform) => (DevicePlatform[p] ?? "UNSPECIFIED").toLowerCase();

/**
 * Push through a gateway over HTTPS, as Matrix homeservers do: one signed
 * POST per new message listing the recipients' devices that have a push
 * token and no live session. The body carries a pointer to the event, never
 * its content: the app fetches it when it wakes. Best effort: failures are
 * retried, then logged, and never affect the send.
 */
export function createWebhookPush(opts: WebhookPushOptions): PushNotifier {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const attempts = opts.attempts ?? 3;
  const concurrency = opts.concurrency ?? 16;
  const maxQueued = opts.maxQueued ?? 10_000;
  const queue: PushNotification[] = [];
  const running = new Set<Promise<void>>();
  let closed = false;

  async function post(n: PushNotification) {
    const body = JSON.stringify(n);
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
          signal: AbortSignal.timeout(timeoutMs),
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
        if (attempt >= attempts || closed) {
          opts.log.warn({ err, conversationId: n.conversation_id, seq: n.seq }, "push failed");
          return;
        }
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    }
  }

  function pump() {
    while (running.size < concurrency && queue.length > 0) {
      const task = post(queue.shift()!).finally(() => {
        running.delete(task);
        pump();
      });
      running.add(task);
    }
  }

  return {
    async notify(event, recipientUserIds, connectedDeviceIds) {
      if (closed) return;
      try {
        const { targets } = await opts.store.loadPushTargets({ userIds: recipientUserIds });
        const devices = targets
          .filter((t) => !connectedDeviceIds.has(t.deviceId))
          .map((t) => ({
            user_id: t.userId,
            device_id: t.deviceId,
            platform: platformName(t.platform),
            push_token: t.pushToken,
          }));
        if (devices.length === 0) return;
        if (queue.length >= maxQueued) {
          opts.log.warn({ conversationId: event.conversationId }, "push queue full, dropping");
          return;
        }
        queue.push({
          conversation_id: event.conversationId,
          seq: event.seq.toString(),
          event_id: event.eventId,
          sender_user_id: event.actorUserId,
          devices,
        });
        pump();
      } catch (err) {
        opts.log.warn({ err }, "push targets lookup failed");
      }
    },
    /** Lets notifications in flight finish; what is still queued is dropped. */
    async close() {
      closed = true;
      queue.length = 0;
      await Promise.all([...running]);
    },
  };
}
