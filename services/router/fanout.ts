import type { ServerFrame } from "../../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { PushNotifier } from "../../lib/backends/push.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import { deliverToUsers } from "../../lib/delivery.js";
import { BackendUnavailableError } from "../../lib/errors.js";
import type { Logger } from "../../lib/logger.js";
import type { Metrics } from "../../lib/metrics.js";

/** The first pause between fan-out attempts, doubled per attempt up to `retryMaxPauseMs`. */
const retryFirstPauseMs = 50;
const retryMaxPauseMs = 2_000;

/**
 * Fan-out of durable events to every connected device of the recipients,
 * the sender's own devices included (the sending stream turns its copy into
 * the send-ack), then push for devices that are not connected.
 *
 * A durable event whose fan-out fails for the soft state (the registry or
 * bus unreachable: BackendUnavailableError) is tried again with backoff for
 * up to `retryForMs`, and the conversation's later events wait behind it, so
 * live streams still see them in seq order.
 * A retry may reach an edge a second time; sessions drop what they have
 * already sent by seq. Past `retryForMs`, or once `stop()` is called, the
 * event is left to sync (streams find it by its gap or on reconnect) and its
 * push goes to all the recipients' devices, since which are connected is unknown.
 * Receipts get the same retries (deliverDurable), without an order to keep.
 */
export function createFanout(deps: {
  soft: SoftState;
  push?: PushNotifier;
  log: Logger;
  metrics: Metrics;
  retryForMs: number;
}) {
  const chains = new Map<string, Promise<void>>();
  let stopping = false;
  const wakers = new Set<() => void>();

  const deliver = async (frame: ServerFrame, userIds: string[]) => {
    const connected = await deliverToUsers(deps.soft, frame, userIds);
    deps.metrics.deliveries.inc({ frame: frame.frame.case ?? "none" }, connected.size);
    return connected;
  };

  const notifyPush = (event: Event, recipients: string[], connected: Set<string>) => {
    if (!deps.push || event.kind.case !== "messagePosted") return;
    const others = recipients.filter((u) => u !== event.actorUserId);
    // Not awaited: the next event's delivery must not wait for push.
    if (others.length > 0) void deps.push.notify(event, others, connected);
  };

  /** Resolves after `ms`, or at once when the fan-out stops. */
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      wakers.add(wake);
    });

  /**
   * Delivers `frame`, trying again while the soft state fails, for up to
   * `retryForMs`; resolves to the devices found connected, or undefined once
   * it gave up. `tried` hears the first attempt's outcome.
   */
  /** What a log line says the frame is about; built only when a line is written. */
  const about = ({ frame }: ServerFrame) =>
    frame.case === "event"
      ? { conversationId: frame.value.conversationId, seq: frame.value.seq }
      : frame.case === "receipt"
        ? { conversationId: frame.value.conversationId, receiptOf: frame.value.userId }
        : { frame: frame.case };

  async function deliverRetrying(
    frame: ServerFrame,
    recipients: string[],
    tried?: (delivered: boolean) => void,
  ): Promise<Set<string> | undefined> {
    let failedSince: number | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        const connected = await deliver(frame, recipients);
        if (attempt === 0) tried?.(true);
        else deps.log.info({ ...about(frame), attempts: attempt + 1 }, "fan-out recovered");
        return connected;
      } catch (err) {
        if (attempt === 0) tried?.(false);
        failedSince ??= Date.now();
        const pauseMs = Math.min(retryFirstPauseMs * 2 ** attempt, retryMaxPauseMs);
        const transient = err instanceof BackendUnavailableError;
        if (!transient || stopping || Date.now() - failedSince + pauseMs > deps.retryForMs) {
          deps.metrics.fanoutAbandoned.inc();
          deps.log.error(
            { err, ...about(frame), attempts: attempt + 1 },
            "fan-out abandoned: recipients get it by sync",
          );
          return undefined;
        }
        if (attempt === 0) deps.log.warn({ err, ...about(frame) }, "fan-out failed, retrying");
        deps.metrics.fanoutRetries.inc();
        await pause(pauseMs);
      }
    }
  }

  async function deliverEvent(event: Event, recipients: string[]) {
    // A literal, not create(): one per event (see "The send path" in docs/ARCHITECTURE.md).
    const frame: ServerFrame = {
      $typeName: "chat.v1.ServerFrame",
      replyToFrameId: "",
      frame: { case: "event", value: event },
    };
    const connected = await deliverRetrying(frame, recipients);
    notifyPush(event, recipients, connected ?? new Set());
  }

  /** Fan-outs of durable things (receipts) still retrying after their caller was answered. */
  const retrying = new Set<Promise<unknown>>();

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
          // Not the soft state (deliverRetrying handles that): keep the chain going.
          deps.log.error({ err, conversationId: key, seq: event.seq }, "fan-out failed");
        }
      });
      chains.set(key, next);
      void next.then(() => {
        if (chains.get(key) === next) chains.delete(key);
      });
    },
    /**
     * Fans out a frame about a change already durable that is not an event
     * (a receipt). Resolves after the first attempt; if the soft state failed
     * it, attempts go on in the background, as for events, and the caller is
     * not failed for it (its change is made; a retry would fan out nothing).
     */
    deliverDurable(frame: ServerFrame, recipients: string[]) {
      return new Promise<void>((resolve) => {
        const done = deliverRetrying(frame, recipients, () => resolve());
        retrying.add(done);
        void done.then(() => retrying.delete(done));
      });
    },
    /** Resolves when every enqueued or retrying fan-out has finished. */
    async idle() {
      while (chains.size > 0 || retrying.size > 0) {
        await Promise.all([...chains.values(), ...retrying]);
      }
    },
    /** Stops retrying: each failing fan-out gives up after its current attempt. */
    stop() {
      stopping = true;
      for (const wake of [...wakers]) wake();
    },
  };
}

export type Fanout = ReturnType<typeof createFanout>;
