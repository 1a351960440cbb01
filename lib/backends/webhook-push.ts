import { createHmac } from "node:crypto";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { PushNotifier } from "./push.js";
import { createPushQueue, type PushQueueOptions } from "./push-queue.js";

export type { PushDropReason } from "./push-queue.js";

export interface WebhookPushOptions extends PushQueueOptions {
  /** The push gateway that turns notifications into FCM/APNs/Web Push calls. */
  url: string;
  /**
   * Signs each request: `x-chat-timestamp: <unix seconds>` and
   * `x-chat-signature: sha256=<hex HMAC of "<timestamp>.<raw body>">`. The
   * timestamp is signed so that a gateway can refuse a replayed request
   * (say, one older than five minutes); each attempt is signed anew.
   */
  secret: string;
  timeoutMs?: number;
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
 * its content: the app fetches it when it wakes.
 *
 * A 2xx is done, another 4xx (but 408 and 429) is a refusal that is logged
 * and not retried; anything else is retried as createPushQueue says.
 */
export function createWebhookPush(opts: WebhookPushOptions): PushNotifier {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return createPushQueue(opts, async (d, signal) => {
    const n: PushNotification = {
      conversation_id: d.conversationId,
      seq: d.seq,
      event_id: d.eventId,
      sender_user_id: d.senderUserId,
      devices: d.devices.map((t) => ({
        user_id: t.userId,
        device_id: t.deviceId,
        platform: platformName(t.platform),
        push_token: t.pushToken,
      })),
    };
    const body = JSON.stringify(n);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const signature = createHmac("sha256", opts.secret)
      .update(`${timestamp}.${body}`)
      .digest("hex");
    const res = await fetch(opts.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-chat-timestamp": timestamp,
        "x-chat-signature": `sha256=${signature}`,
      },
      body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    });
    await res.body?.cancel();
    if (res.ok) return [];
    // Other 4xx: the gateway refused this notification; retrying will not help.
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
      opts.log.warn({ status: res.status }, "push gateway refused a notification");
      return [];
    }
    throw new Error(`push gateway answered ${res.status}`);
  });
}
