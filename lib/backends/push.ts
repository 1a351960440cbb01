import type { Event } from "../../gen/chat/v1/event_pb.js";

/**
 * Push notifications for devices without a live session. Best effort: a
 * failed or dropped push loses nothing, because the device syncs when it
 * reconnects; so an implementation drops rather than hold up sends or grow
 * without bound.
 *
 * Implementations: webhook-push.ts, a signed POST to a push gateway, and
 * fcm-push.ts, FCM through firebase-admin; push-queue.ts bounds both.
 */
export interface PushNotifier {
  /**
   * Notifies the recipients' devices that have a push token and are not in
   * `connectedDeviceIds`. Resolves once the notification is queued or
   * dropped, never waiting for the store or the gateway. Never throws.
   */
  notify(event: Event, recipientUserIds: string[], connectedDeviceIds: Set<string>): Promise<void>;
  /** After it resolves nothing more is posted; it does not wait for a slow gateway. */
  close(): Promise<void>;
}
