import { decodeEvent, rememberEventBytes } from "../../event-bytes.js";
import type { EventStore } from "../event-store.js";
import type { MetadataStore, SyncState } from "../metadata-store.js";
import { big, directKey, num, type Row, toConv, toDevice, toMember, toUser } from "../records.js";
import { indexed, openDatabase, type SqliteOptions } from "./schema.js";
import { openWriter } from "./writer-client.js";
import { fromWire } from "./writes.js";

export interface SqliteStore extends EventStore, MetadataStore {}

/**
 * Events and metadata in one SQLite database (WAL). Reads run on a
 * read-only connection in the calling thread; every write goes to the
 * writer thread (writer-thread.ts), which commits whatever is waiting as one
 * transaction, so the event loop never waits on the disk and concurrent
 * writes share an fsync. A write resolves once its transaction committed: a
 * resolved commit is durable (with synchronous=FULL, also across power loss)
 * and visible to every read that starts after it.
 */
export function openSqliteStore(opts: SqliteOptions): SqliteStore {
  // Opened first: it creates and migrates the schema, so the statements below
  // find it in place, and so does the writer.
  const db = openDatabase(opts, "reader");
  const writer = openWriter(opts);

  const q = {
    conv: db.prepare("SELECT * FROM conversations WHERE conversation_id = ?"),
    byDirectKey: db.prepare("SELECT conversation_id FROM conversations WHERE direct_key = ?"),
    byRequestKey: db.prepare("SELECT conversation_id FROM conversations WHERE request_key = ?"),
    member: db.prepare("SELECT * FROM members WHERE conversation_id = ? AND user_id = ?"),
    members: db.prepare(
      "SELECT * FROM members WHERE conversation_id = ? AND left_seq IS NULL ORDER BY joined_seq, user_id",
    ),
    eventBody: db.prepare("SELECT body FROM events WHERE conversation_id = ? AND seq = ?"),
    byClientMsgId: db.prepare(
      "SELECT body FROM events WHERE conversation_id = ? AND actor_user_id = ? AND client_msg_id = ?",
    ),
    reactions: db.prepare(indexed.reactions.sql),
    after: db.prepare(
      "SELECT body FROM events WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    ),
    before: db.prepare(
      `SELECT body FROM events WHERE conversation_id = ? AND seq < ? AND seq >= ?
       ORDER BY seq DESC LIMIT ?`,
    ),
    unread: db.prepare(
      `SELECT count(*) AS n FROM (SELECT 1 FROM events WHERE conversation_id = ? AND seq > ?
        AND kind = 11 AND actor_user_id <> ? AND redacted = 0 LIMIT ?)`,
    ),
    usersIn: db.prepare("SELECT * FROM users WHERE user_id IN (SELECT value FROM json_each(?))"),
    device: db.prepare("SELECT * FROM devices WHERE device_id = ?"),
    devicesOf: db.prepare("SELECT * FROM devices WHERE user_id = ? ORDER BY created_at, device_id"),
    pushTargets: db.prepare(
      `SELECT * FROM devices WHERE user_id IN (SELECT value FROM json_each(?))
       AND revoked_at = 0 AND push_token <> ''`,
    ),
    userConversations: db.prepare(
      `SELECT c.*, m.* FROM members m JOIN conversations c USING (conversation_id)
       WHERE m.user_id = @user AND m.left_seq IS NULL
         AND (@at IS NULL OR c.last_activity_at < @at
              OR (c.last_activity_at = @at AND c.conversation_id < @conv))
       ORDER BY c.last_activity_at DESC, c.conversation_id DESC LIMIT @limit`,
    ),
    movedConversations: db.prepare(
      `SELECT c.*, m.* FROM members m JOIN conversations c USING (conversation_id)
       WHERE m.user_id = @user AND m.left_seq IS NULL AND c.activity_rev > @rev
         AND (c.last_activity_at > @at
              OR (c.last_activity_at = @at AND c.conversation_id >= @conv))
       ORDER BY c.activity_rev LIMIT @limit`,
    ),
    // The user's own conversations bound what can move in their list: a
    // conversation they join later gets a newer rev by that very commit.
    userRev: db.prepare(
      `SELECT coalesce(max(c.activity_rev), 0) AS rev
       FROM members m JOIN conversations c USING (conversation_id) WHERE m.user_id = ?`,
    ),
    syncStates: db.prepare(
      `SELECT m.conversation_id, m.joined_seq, m.left_seq, c.head_seq, c.last_activity_at,
         d.delivered_seq AS cursor
       FROM members m JOIN conversations c USING (conversation_id)
       LEFT JOIN device_cursors d ON d.device_id = @device AND d.conversation_id = m.conversation_id
       WHERE m.user_id = @user`,
    ),
    sharedPeers: db.prepare(
      `SELECT DISTINCT m2.user_id FROM members m1
       JOIN members m2 ON m2.conversation_id = m1.conversation_id
       WHERE m1.user_id = ? AND m1.left_seq IS NULL AND m2.left_seq IS NULL
         AND m2.user_id IN (SELECT value FROM json_each(?))`,
    ),
  };

  const body = (row: unknown) => (row as { body: Uint8Array }).body;
  /** For events handed out read-only: their stored bytes are kept for re-encoding. */
  const decode = (row: unknown) => decodeEvent(body(row));
  /** The newest `limit` rows below beforeSeq (0: after the head), newest first. */
  const rowsBefore = (conversationId: string, beforeSeq: bigint, minSeq: bigint, limit: number) =>
    q.before.all(
      conversationId,
      beforeSeq === 0n ? BigInt(Number.MAX_SAFE_INTEGER) : beforeSeq,
      minSeq,
      limit,
    );

  const toUserConversation = (r: Row) => ({ conversation: toConv(r), member: toMember(r) });
  // One snapshot: the rev must not count a commit whose effect the rows miss.
  const readListPage = db.transaction(
    (
      userId: string,
      limit: number,
      after: { lastActivityMs: number; conversationId: string; rev?: bigint } | undefined,
    ) => {
      const below = (
        q.userConversations.all({
          user: userId,
          at: after?.lastActivityMs ?? null,
          conv: after?.conversationId ?? null,
          limit,
        }) as Row[]
      ).map(toUserConversation);
      const movedRows =
        after?.rev === undefined
          ? []
          : (q.movedConversations.all({
              user: userId,
              rev: after.rev,
              at: after.lastActivityMs,
              conv: after.conversationId,
              limit,
            }) as Row[]);
      // Oldest moves first, at most `limit`: when more moved, the revision
      // given back is the last one returned, so the rest come next time.
      const rev =
        movedRows.length === limit
          ? big(movedRows.at(-1)!.activity_rev)
          : big((q.userRev.get(userId) as Row).rev);
      const moved = movedRows
        .sort(
          (a, b) =>
            num(b.last_activity_at) - num(a.last_activity_at) ||
            ((b.conversation_id as string) < (a.conversation_id as string) ? -1 : 1),
        )
        .map(toUserConversation);
      return { moved, below, rev };
    },
  );

  return {
    async commit(events) {
      // Events cross to the writer as structured clones, and it encodes them
      // (protobuf encoding is the costliest step of a send); the bytes it
      // stored come back and go out to every stream the events reach.
      const outcomes = await writer.call("commit", events);
      return outcomes.map((o, i) => {
        if (o instanceof Uint8Array) {
          rememberEventBytes(events[i]!, o);
          return undefined;
        }
        return fromWire(o);
      });
    },
    async readAfter(conversationId, afterSeq, limit) {
      return q.after.all(conversationId, afterSeq, limit).map(decode);
    },
    async readBefore(conversationId, beforeSeq, minSeq, limit) {
      return rowsBefore(conversationId, beforeSeq, minSeq, limit).map(decode).reverse();
    },
    async readAfterEncoded(conversationId, afterSeq, limit) {
      return q.after.all(conversationId, afterSeq, limit).map(body);
    },
    async readBeforeEncoded(conversationId, beforeSeq, minSeq, limit) {
      return rowsBefore(conversationId, beforeSeq, minSeq, limit).map(body).reverse();
    },
    async readEvent(conversationId, seq) {
      const row = q.eventBody.get(conversationId, seq);
      return row ? decode(row) : undefined;
    },
    async findByClientMsgId(conversationId, actorUserId, clientMsgId) {
      const row = q.byClientMsgId.get(conversationId, actorUserId, clientMsgId);
      return row ? decode(row) : undefined;
    },
    async readReactions(conversationId, targetSeq, actorUserId) {
      return (q.reactions.all(conversationId, targetSeq, actorUserId) as Row[]).map(decode);
    },
    async countUnread(conversationId, userId, afterSeq, cap) {
      return num((q.unread.get(conversationId, afterSeq, userId, cap) as Row).n);
    },

    putUser: (userId, displayName, createOnly) =>
      writer.call("putUser", userId, displayName, createOnly),
    async getUsers(userIds) {
      return (q.usersIn.all(JSON.stringify(userIds)) as Row[]).map(toUser);
    },
    ensureDevice: (userId, deviceId, platform) =>
      writer.call("ensureDevice", userId, deviceId, platform),
    updateDevice: (userId, deviceId, patch) => writer.call("updateDevice", userId, deviceId, patch),
    async getDevice(deviceId) {
      const row = q.device.get(deviceId) as Row | undefined;
      return row ? toDevice(row) : undefined;
    },
    async listDevices(userId) {
      return (q.devicesOf.all(userId) as Row[]).map(toDevice);
    },
    revokeDevice: (userId, deviceId) => writer.call("revokeDevice", userId, deviceId),
    forgetPushToken: (deviceId, pushToken) => writer.call("forgetPushToken", deviceId, pushToken),
    async pushTargets(userIds) {
      return (q.pushTargets.all(JSON.stringify(userIds)) as Row[]).map(toDevice);
    },

    async getConversation(conversationId) {
      const row = q.conv.get(conversationId) as Row | undefined;
      return row ? toConv(row) : undefined;
    },
    async findDirect(userA, userB) {
      const row = q.byDirectKey.get(directKey(userA, userB)) as Row | undefined;
      return row?.conversation_id as string | undefined;
    },
    async findGroupRequest(creatorUserId, clientRequestId) {
      const row = q.byRequestKey.get(`${creatorUserId} ${clientRequestId}`) as Row | undefined;
      return row?.conversation_id as string | undefined;
    },
    async getMember(conversationId, userId) {
      const row = q.member.get(conversationId, userId) as Row | undefined;
      return row ? toMember(row) : undefined;
    },
    async listMembers(conversationId) {
      return (q.members.all(conversationId) as Row[]).map(toMember);
    },
    async listUserConversations(userId, limit, after) {
      return readListPage(userId, limit, after);
    },
    async syncStates(userId, deviceId) {
      return (q.syncStates.all({ user: userId, device: deviceId }) as Row[]).map(
        (r): SyncState => ({
          conversationId: r.conversation_id as string,
          joinedSeq: big(r.joined_seq),
          leftSeq: r.left_seq === null ? undefined : big(r.left_seq),
          headSeq: big(r.head_seq),
          lastActivityMs: num(r.last_activity_at),
          deviceCursor: r.cursor === null ? undefined : big(r.cursor),
        }),
      );
    },
    advanceReceipt: (userId, deviceId, conversationId, deliveredSeq, readSeq) =>
      writer.call("advanceReceipt", userId, deviceId, conversationId, deliveredSeq, readSeq),
    async sharedPeers(userId, candidates) {
      return (q.sharedPeers.all(userId, JSON.stringify(candidates)) as Row[]).map(
        (r) => r.user_id as string,
      );
    },
    async close() {
      await writer.close();
      if (db.open) db.close();
    },
  };
}
