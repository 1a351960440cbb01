import type { Event } from "../../gen/chat/v1/event_pb.js";

/**
 * The message log: events keyed by conversation, in append order per
 * conversation. The router appends; the store consumes.
 *
 * Implementations: the in-process log (embedded; an append settles when the
 * store has committed the event, with the store's verdict on it) and the
 * Pulsar log (settles when the broker has persisted it; the store commits it
 * later). A log whose durability point cannot judge events reports no
 * verdicts; the router then rules conflicts out before appending (a dedup
 * check that covers what the store has not consumed yet, one writer per
 * conversation), and reads that must see every acknowledged change wait for
 * the store to catch up (caughtUp).
 */
export interface MessageLog {
  /**
   * True when an append settles with the durability point's verdict on the
   * event (seq contiguity, idempotency keys), as the in-process log does.
   * The router then leaves duplicate detection to that verdict instead of
   * looking each key up before taking a seq.
   */
  readonly judges: boolean;
  /**
   * Appends one event and resolves once it is durable. Appends from one
   * caller for one conversation are consumed in call order. May reject with
   * a domain error the durability point raised for this event
   * (SeqConflictError, DuplicateEventError, ConversationExistsError,
   * UnknownConversationError); other events are unaffected.
   */
  append(event: Event): Promise<void>;
  /**
   * Resolves once the consumer has handled every event appended here, when
   * called, to the conversation (or to any conversation, without one). At
   * once for a log that judges: its appends settle only after that. Rejects
   * with BackendUnavailableError when the store stays behind.
   */
  caughtUp(conversationId?: string): Promise<void>;
  /**
   * The unconsumed event appended here under this idempotency key, if any: a
   * log without verdicts acknowledges events before the store holds them, so
   * a dedup check asks the log as well as the store (undefined for a log that
   * judges). Throws BackendUnavailableError while the append under that key is
   * not known to be in the log (in flight, or failed until a resync settles
   * its fate): a retry answered with it might be told of an event never stored.
   */
  pendingKey(conversationId: string, actorUserId: string, clientMsgId: string): Event | undefined;
  /**
   * Registers the consumer. `handler` gets batches in log order and returns
   * one verdict per event (undefined = committed); the batch counts as
   * consumed when it resolves. A rejected handler fails the whole batch.
   */
  consume(handler: (batch: Event[]) => Promise<(Error | undefined)[]>): void;
  /** Stops consuming; pending appends reject with BackendUnavailableError. */
  close(): Promise<void>;
}
