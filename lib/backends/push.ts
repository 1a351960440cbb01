import type { Event } from "../../gen/chat/v1/event_pb.js";

/**
 * Push notifications for devices without a live session. Best effort: a
 * failed push loses nothing, because the device syncs when it reconnects.
 *
 * Implementation: FCM via firebase-admin (Android, iOS through FCM, web).
 */
export interface PushNotifier {
  /**
   * Notifies the recipients' devices that have a push token and are not in
   * `connectedDeviceIds`. Never throws.
   */
  notify(event: Event, recipientUserIds: string[], connectedDeviceIds: Set<string>): Promise<void>;
  close(): Promise<void>;
}
