import type { ServerFrame } from "../../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { PushNotifier } from "../../lib/backends/push.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import { deliverToUsers } from "../../lib/delivery.js";
import type { Logger } from "../../lib/logger.js";
import type { Metrics } from "../../lib/metrics.js";

/**
 * Fan-out of durable events to every connected device of the recipients,
 * the sender's own devices included (the sending stream turns its copy into
 * the send-ack), then push for devices that are not connected.
 */
export function createFanout(deps: {
  soft: SoftState;
  push?: PushNotifier;
  log: Logger;
  metrics: Metrics;
}) {
  const chains = new Map<string, Promise<void>>();

  const deliver = async (frame: ServerFrame, userIds: string[]) => {
    const connected = await deliverToUsers(deps.soft, frame, userIds);
    deps.metrics.deliveries.inc({ frame: frame.frame.case ?? "none" }, connected.size);
    return connected;
  };

  async function deliverEvent(event: Event, recipients: string[]) {
    // A literal, not create(): one per event (see "The send path" in docs/ARCHITECTURE.md).
    const frame: ServerFrame = {
      $typeName: "chat.v1.ServerFrame",
      replyToFrameId: "",
      frame: { case: "event", value: event },
    };
    const connected = await deliver(frame, recipients);
    if (deps.push && event.kind.case === "messagePosted") {
      const others = recipients.filter((u) => u !== event.actorUserId);
      // Not awaited: the next event's delivery must not wait for push.
      if (others.length > 0) void deps.push.notify(event, others, connected);
    }
  }

  return {
    deliver,
    /**
     * Fans an event out once it is durable. Events of one conversation are
     * delivered in the order they were enqueued (their seq order), whatever
     * order their commits are observed in; a failed append delivers nothing.
     */
    enqueue(event: Event, durable: Promise<void>, recipients: string[]) {
      const key = event.conversationId;
      const prev = chains.get(key) ?? Promise.resolve();
      const next = prev.then(async () => {
        try {
          await durable;
        } catch {
          return;
        }
        try {
          await deliverEvent(event, recipients);
        } catch (err) {
          // Recipients recover through sync; the event itself is durable.
          deps.log.warn({ err, conversationId: key, seq: event.seq }, "fan-out failed");
        }
      });
      chains.set(key, next);
      void next.then(() => {
        if (chains.get(key) === next) chains.delete(key);
      });
    },
    /** Resolves when every enqueued fan-out has finished. */
    async idle() {
      while (chains.size > 0) await Promise.all([...chains.values()]);
    },
  };
}

export type Fanout = ReturnType<typeof createFanout>;
