import type { Event } from "../../gen/chat/v1/event_pb.js";

/**
 * Durable storage of conversation events: written once, read by range.
 *
 * Implementations: SQLite (embedded) and Cassandra (partitioned by
 * conversation, clustered by seq).
 */
export interface EventStore {
  /**
   * Durably commits events in order and returns one verdict per event
   * (undefined = committed). Each event is checked first and skipped with a
   * verdict when it fails:
   * - seq must be the conversation's head + 1; seq 1 must carry
   *   ConversationCreated for a new id (SeqConflictError);
   * - a non-empty client_msg_id must be unused by the same actor in the
   *   conversation (DuplicateEventError with the original);
   * - a direct pair or a creator's client_request_id may open only one
   *   conversation (ConversationExistsError);
   * - other kinds need an existing conversation (UnknownConversationError).
   * The metadata projection of each committed event (members, roles, title,
   * head, last activity, redaction of deleted messages, the sender's read
   * cursor) is visible through MetadataStore once this resolves.
   * Rejects (BackendUnavailableError, when it may pass) when the backend
   * fails and nothing of the batch is known committed. A backend that commits
   * conversations apart (Cassandra) instead gives the events it could not
   * commit that error as their verdict when others did commit.
   */
  commit(events: Event[]): Promise<(Error | undefined)[]>;
  /** Events with seq > afterSeq, ascending, at most `limit`. */
  readAfter(conversationId: string, afterSeq: bigint, limit: number): Promise<Event[]>;
  /**
   * The newest `limit` events with minSeq <= seq < beforeSeq, returned
   * ascending. beforeSeq 0 means "after the head".
   */
  readBefore(
    conversationId: string,
    beforeSeq: bigint,
    minSeq: bigint,
    limit: number,
  ): Promise<Event[]>;
  /**
   * readAfter, with each event as it is stored: its binary encoding, exactly
   * toBinary(EventSchema, event) of what readAfter returns (redactions
   * included). For callers that pass events on without reading them.
   */
  readAfterEncoded(conversationId: string, afterSeq: bigint, limit: number): Promise<Uint8Array[]>;
  /** readBefore, with each event as it is stored (see readAfterEncoded). */
  readBeforeEncoded(
    conversationId: string,
    beforeSeq: bigint,
    minSeq: bigint,
    limit: number,
  ): Promise<Uint8Array[]>;
  readEvent(conversationId: string, seq: bigint): Promise<Event | undefined>;
  findByClientMsgId(
    conversationId: string,
    actorUserId: string,
    clientMsgId: string,
  ): Promise<Event | undefined>;
  /**
   * The reactions `actorUserId` added and removed on the message at
   * `targetSeq`, ascending by seq: the last one per emoji says whether the
   * user has that reaction now.
   */
  readReactions(conversationId: string, targetSeq: bigint, actorUserId: string): Promise<Event[]>;
  /**
   * Messages by users other than `userId` with seq > afterSeq, counted up to
   * `cap`; deleted (redacted) messages do not count.
   */
  countUnread(
    conversationId: string,
    userId: string,
    afterSeq: bigint,
    cap: number,
  ): Promise<number>;
  close(): Promise<void>;
}
