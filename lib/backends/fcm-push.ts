import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import type { App } from "firebase-admin/app";
import type { Messaging, TokenMessage } from "firebase-admin/messaging";
import { ConfigError } from "../errors.js";
import { newId } from "../ids.js";
import type { PushNotifier } from "./push.js";
import { createPushQueue, type PushDevice, type PushQueueOptions } from "./push-queue.js";

export interface FcmPushOptions extends PushQueueOptions {
  /** A Firebase service account's JSON key file; its project receives the sends. */
  credentialsFile: string;
  /**
   * Carries every HTTPS request (OAuth token and sends), e.g. through a proxy.
   * Defaults to a keep-alive agent with `concurrency` sockets.
   */
  agent?: Agent;
}

/** FCM's answers that say the token will never work again: the app was uninstalled or the token rotated. */
const staleToken = new Set([
  "messaging/registration-token-not-registered",
  "messaging/invalid-registration-token",
]);

/** Answers worth another attempt: FCM overloaded, rate limits, the network or the OAuth exchange. */
const transient = new Set([
  "messaging/server-unavailable",
  "messaging/internal-error",
  "messaging/message-rate-exceeded",
  "messaging/device-message-rate-exceeded",
  "messaging/unknown-error",
  "app/network-error",
  "app/network-timeout",
  "app/invalid-credential",
]);

/** FCM takes at most this many messages per sendEach. */
const batchMax = 500;

/**
 * The service account key file's project id. Throws ConfigError when the file
 * is missing or is not a key, so the server stops at start instead of failing every push.
 */
export function readFcmProjectId(file: string): string {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError("push.fcmCredentialsFile is not a readable JSON file", { cause: err });
  }
  const sa = json as Record<string, unknown>;
  for (const field of ["project_id", "private_key", "client_email"]) {
    if (typeof sa[field] !== "string" || sa[field] === "") {
      throw new ConfigError(`push.fcmCredentialsFile is not a service account key (no ${field})`);
    }
  }
  return sa.project_id as string;
}

/**
 * Push straight to Firebase Cloud Messaging through firebase-admin, one data
 * message per device with a token and no live session. Like the webhook, a
 * message carries a pointer to the event, never its content: the app wakes
 * (Android high priority, an APNs background push, Web Push urgency high) and
 * syncs. Tokens FCM calls unregistered or invalid are cleared from their
 * devices, unless the device registered another since; transient failures
 * are retried as createPushQueue says.
 *
 * firebase-admin retries a 503 by itself, so such a request may still
 * complete after close().
 */
export function createFcmPush(opts: FcmPushOptions): PushNotifier {
  const projectId = readFcmProjectId(opts.credentialsFile);
  const agent = opts.agent ?? new Agent({ keepAlive: true, maxSockets: opts.concurrency ?? 16 });
  // Loaded on the first push, so a server without FCM never loads firebase-admin.
  let messaging: Promise<{ app: App; messaging: Messaging }> | undefined;
  const connect = () => {
    messaging ??= (async () => {
      const { cert, initializeApp } = await import("firebase-admin/app");
      const { getMessaging } = await import("firebase-admin/messaging");
      const app = initializeApp(
        { credential: cert(opts.credentialsFile, agent), httpAgent: agent, projectId },
        newId("fcm_"),
      );
      const m = getMessaging(app);
      // HTTP/1.1, so that every request goes through `agent`; its HTTP/2 path takes no agent.
      m.enableLegacyHttpTransport();
      return { app, messaging: m };
    })();
    return messaging;
  };

  const queue = createPushQueue(opts, async (d) => {
    const { messaging: m } = await connect();
    const data = {
      conversation_id: d.conversationId,
      seq: d.seq,
      event_id: d.eventId,
      sender_user_id: d.senderUserId,
    };
    const again: PushDevice[] = [];
    for (let i = 0; i < d.devices.length; i += batchMax) {
      const devices = d.devices.slice(i, i + batchMax);
      const messages: TokenMessage[] = devices.map((t) => ({
        token: t.pushToken,
        data,
        android: { priority: "high" },
        apns: {
          headers: { "apns-push-type": "background", "apns-priority": "5" },
          payload: { aps: { contentAvailable: true } },
        },
        webpush: { headers: { Urgency: "high" } },
      }));
      const res = await m.sendEach(messages);
      for (const [j, r] of res.responses.entries()) {
        const code = r.error?.code;
        if (r.success || code === undefined) continue;
        const t = devices[j]!;
        if (staleToken.has(code)) {
          // A failure here must not fail the delivery: that would resend what FCM accepted.
          await opts.store.forgetPushToken({ deviceId: t.deviceId, pushToken: t.pushToken }).then(
            () => opts.log.info({ deviceId: t.deviceId, code }, "FCM token is stale, forgotten"),
            (err: unknown) =>
              opts.log.warn({ err, deviceId: t.deviceId }, "forgetting a stale FCM token failed"),
          );
        } else if (transient.has(code)) {
          again.push(t);
        } else {
          opts.log.warn({ deviceId: t.deviceId, code, err: r.error }, "FCM refused a push");
        }
      }
    }
    return again;
  });

  return {
    notify: (event, recipients, connected) => queue.notify(event, recipients, connected),
    async close() {
      await queue.close();
      const started = messaging;
      messaging = Promise.reject(new Error("push is closed"));
      messaging.catch(() => undefined);
      const app = (await started?.catch(() => undefined))?.app;
      if (app) {
        const { deleteApp } = await import("firebase-admin/app");
        await deleteApp(app).catch(() => undefined);
      }
      if (!opts.agent) agent.destroy();
    },
  };
}
