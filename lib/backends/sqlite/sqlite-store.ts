import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import Database from "better-sqlite3";
import {
  ConversationKind,
  type Event,
  EventSchema,
  MessageEditedSchema,
  MessageKind,
  MessagePostedSchema,
  Role,
} from "../../../gen/chat/v1/event_pb.js";
import { DevicePlatform } from "../../../gen/chat/v1/model_pb.js";
import {
  ConversationExistsError,
  DeviceStateError,
  DuplicateEventError,
  NotFoundError,
  NotMemberError,
  SeqConflictError,
  UnknownConversationError,
} from "../../errors.js";
import { decodeEvent, eventBytes } from "../../event-bytes.js";
import type { EventStore } from "../event-store.js";
import type {
  ConversationRecord,
  DeviceRecord,
  MemberRecord,
  MetadataStore,
  SyncState,
  UserRecord,
} from "../metadata-store.js";

const schema = `
CREATE TABLE IF NOT EXISTS users (
  user_id TEXT PRIMARY KEY,
  display_name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  platform INTEGER NOT NULL DEFAULT 0,
  display_name TEXT NOT NULL DEFAULT '',
  push_token TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  last_active_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_user ON devices(user_id);
CREATE TABLE IF NOT EXISTS conversations (
  conversation_id TEXT PRIMARY KEY,
  kind INTEGER NOT NULL,
  title TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  head_seq INTEGER NOT NULL,
  last_activity_at INTEGER NOT NULL,
  member_count INTEGER NOT NULL,
  direct_key TEXT UNIQUE,
  request_key TEXT UNIQUE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
  conversation_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  role INTEGER NOT NULL,
  joined_seq INTEGER NOT NULL,
  joined_at INTEGER NOT NULL,
  left_seq INTEGER,
  delivered_seq INTEGER NOT NULL DEFAULT 0,
  read_seq INTEGER NOT NULL DEFAULT 0,
  receipt_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user_id, conversation_id);
CREATE TABLE IF NOT EXISTS events (
  conversation_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  actor_user_id TEXT NOT NULL,
  client_msg_id TEXT,
  target_seq INTEGER,
  body BLOB NOT NULL,
  PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_dedup
  ON events(conversation_id, actor_user_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_target
  ON events(conversation_id, target_seq) WHERE target_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS device_cursors (
  device_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  delivered_seq INTEGER NOT NULL,
  PRIMARY KEY (device_id, conversation_id)
) WITHOUT ROWID;
`;

/** Event kinds as stored in events.kind: the oneof field numbers of Event. */
const kindNumber: Record<NonNullable<Event["kind"]["case"]>, number> = {
  conversationCreated: 10,
  messagePosted: 11,
  messageEdited: 12,
  messageDeleted: 13,
  reactionAdded: 14,
  reactionRemoved: 15,
  membersAdded: 16,
  memberRemoved: 17,
  memberRoleChanged: 18,
  conversationRenamed: 19,
};

type Row = Record<string, unknown>;

const big = (v: unknown): bigint => BigInt(v as number | bigint);
const num = (v: unknown): number => Number(v as number | bigint);

/** The key that makes a direct chat unique per user pair, independent of order. */
const directKey = (a: string, b: string) => (a < b ? `${a} ${b}` : `${b} ${a}`);

export interface SqliteStore extends EventStore, MetadataStore {}

/**
 * Events and metadata in one SQLite database (WAL). A commit is one
 * transaction holding the events and their projections, so a resolved commit
 * is durable (with synchronous=FULL, also across power loss).
 */
export function openSqliteStore(opts: {
  path: string;
  synchronous?: "FULL" | "NORMAL";
}): SqliteStore {
  if (opts.path !== ":memory:") mkdirSync(dirname(opts.path), { recursive: true });
  const db = new Database(opts.path);
  db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${opts.synchronous ?? "FULL"}`);
  db.pragma("busy_timeout = 5000");
  db.exec(schema);

  const q = {
    conv: db.prepare("SELECT * FROM conversations WHERE conversation_id = ?"),
    insertConv: db.prepare(
      `INSERT INTO conversations (conversation_id, kind, title, created_by, created_at, head_seq,
        last_activity_at, member_count, direct_key, request_key)
       VALUES (?, ?, ?, ?, ?, 0, ?, 0, ?, ?)`,
    ),
    byDirectKey: db.prepare("SELECT conversation_id FROM conversations WHERE direct_key = ?"),
    byRequestKey: db.prepare("SELECT conversation_id FROM conversations WHERE request_key = ?"),
    advanceHead: db.prepare(
      "UPDATE conversations SET head_seq = ?, last_activity_at = ? WHERE conversation_id = ?",
    ),
    rename: db.prepare("UPDATE conversations SET title = ? WHERE conversation_id = ?"),
    memberCount: db.prepare(
      `UPDATE conversations SET member_count =
        (SELECT count(*) FROM members WHERE conversation_id = @conv AND left_seq IS NULL)
       WHERE conversation_id = @conv`,
    ),
    member: db.prepare("SELECT * FROM members WHERE conversation_id = ? AND user_id = ?"),
    members: db.prepare(
      "SELECT * FROM members WHERE conversation_id = ? AND left_seq IS NULL ORDER BY joined_seq, user_id",
    ),
    join: db.prepare(
      `INSERT INTO members (conversation_id, user_id, role, joined_seq, joined_at, left_seq,
        delivered_seq, read_seq, receipt_at)
       VALUES (@conv, @user, @role, @seq, @at, NULL, 0, 0, 0)
       ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = @role, joined_seq = @seq,
         joined_at = @at, left_seq = NULL, delivered_seq = 0, read_seq = 0, receipt_at = 0
       WHERE left_seq IS NOT NULL`,
    ),
    leave: db.prepare(
      "UPDATE members SET left_seq = ? WHERE conversation_id = ? AND user_id = ? AND left_seq IS NULL",
    ),
    setRole: db.prepare(
      "UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ? AND left_seq IS NULL",
    ),
    senderRead: db.prepare(
      `UPDATE members SET read_seq = @seq, delivered_seq = max(delivered_seq, @seq), receipt_at = @at
       WHERE conversation_id = @conv AND user_id = @user AND left_seq IS NULL AND read_seq < @seq`,
    ),
    advanceDeviceCursor: db.prepare(
      `INSERT INTO device_cursors (device_id, conversation_id, delivered_seq) VALUES (?, ?, ?)
       ON CONFLICT (device_id, conversation_id)
       DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq)`,
    ),
    insertEvent: db.prepare(
      `INSERT INTO events (conversation_id, seq, kind, actor_user_id, client_msg_id, target_seq, body)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    eventBody: db.prepare("SELECT body FROM events WHERE conversation_id = ? AND seq = ?"),
    setBody: db.prepare("UPDATE events SET body = ? WHERE conversation_id = ? AND seq = ?"),
    editsOf: db.prepare(
      "SELECT seq, body FROM events WHERE conversation_id = ? AND target_seq = ? AND kind = 12",
    ),
    byClientMsgId: db.prepare(
      "SELECT body FROM events WHERE conversation_id = ? AND actor_user_id = ? AND client_msg_id = ?",
    ),
    after: db.prepare(
      "SELECT body FROM events WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    ),
    before: db.prepare(
      `SELECT body FROM events WHERE conversation_id = ? AND seq < ? AND seq >= ?
       ORDER BY seq DESC LIMIT ?`,
    ),
    unread: db.prepare(
      `SELECT count(*) AS n FROM (SELECT 1 FROM events WHERE conversation_id = ? AND seq > ?
        AND kind = 11 AND actor_user_id <> ? LIMIT ?)`,
    ),
    user: db.prepare("SELECT * FROM users WHERE user_id = ?"),
    insertUser: db.prepare(
      "INSERT INTO users (user_id, display_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
    ),
    updateUser: db.prepare("UPDATE users SET display_name = ?, updated_at = ? WHERE user_id = ?"),
    usersIn: db.prepare("SELECT * FROM users WHERE user_id IN (SELECT value FROM json_each(?))"),
    device: db.prepare("SELECT * FROM devices WHERE device_id = ?"),
    insertDevice: db.prepare(
      `INSERT INTO devices (device_id, user_id, platform, created_at, last_active_at)
       VALUES (?, ?, ?, ?, ?)`,
    ),
    touchDevice: db.prepare("UPDATE devices SET last_active_at = ? WHERE device_id = ?"),
    updateDevice: db.prepare(
      `UPDATE devices SET platform = ?, display_name = ?, push_token = ?, last_active_at = ?
       WHERE device_id = ?`,
    ),
    revokeDevice: db.prepare(
      "UPDATE devices SET revoked_at = ?, push_token = '' WHERE device_id = ? AND revoked_at = 0",
    ),
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
    syncStates: db.prepare(
      `SELECT m.conversation_id, m.joined_seq, m.left_seq, c.head_seq, c.last_activity_at,
         d.delivered_seq AS cursor
       FROM members m JOIN conversations c USING (conversation_id)
       LEFT JOIN device_cursors d ON d.device_id = @device AND d.conversation_id = m.conversation_id
       WHERE m.user_id = @user`,
    ),
    advanceReceipt: db.prepare(
      `UPDATE members SET read_seq = max(read_seq, @read),
         delivered_seq = max(delivered_seq, @read, @delivered), receipt_at = @at
       WHERE conversation_id = @conv AND user_id = @user AND left_seq IS NULL
         AND (read_seq < @read OR delivered_seq < max(@read, @delivered))`,
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

  const toConv = (r: Row): ConversationRecord => ({
    conversationId: r.conversation_id as string,
    kind: num(r.kind) as ConversationKind,
    title: r.title as string,
    createdBy: r.created_by as string,
    createdAtMs: num(r.created_at),
    headSeq: big(r.head_seq),
    lastActivityMs: num(r.last_activity_at),
    memberCount: num(r.member_count),
  });
  const toMember = (r: Row): MemberRecord => ({
    conversationId: r.conversation_id as string,
    userId: r.user_id as string,
    role: num(r.role) as Role,
    joinedSeq: big(r.joined_seq),
    joinedAtMs: num(r.joined_at),
    leftSeq: r.left_seq === null ? undefined : big(r.left_seq),
    deliveredSeq: big(r.delivered_seq),
    readSeq: big(r.read_seq),
    receiptUpdatedAtMs: num(r.receipt_at),
  });
  const toUser = (r: Row): UserRecord => ({
    userId: r.user_id as string,
    displayName: r.display_name as string,
    createdAtMs: num(r.created_at),
    updatedAtMs: num(r.updated_at),
  });
  const toDevice = (r: Row): DeviceRecord => ({
    deviceId: r.device_id as string,
    userId: r.user_id as string,
    platform: num(r.platform) as DevicePlatform,
    displayName: r.display_name as string,
    pushToken: r.push_token as string,
    createdAtMs: num(r.created_at),
    lastActiveAtMs: num(r.last_active_at),
    revokedAtMs: num(r.revoked_at),
  });

  /** Removes what a deleted message said, keeping its place in the sequence. */
  const redact = (conversationId: string, seq: bigint) => {
    const row = q.eventBody.get(conversationId, seq);
    if (row) {
      const ev = fromBinary(EventSchema, body(row));
      if (ev.kind.case === "messagePosted") {
        ev.kind.value = create(MessagePostedSchema, { messageKind: ev.kind.value.messageKind });
      }
      ev.redacted = true;
      q.setBody.run(toBinary(EventSchema, ev), conversationId, seq);
    }
    for (const edit of q.editsOf.all(conversationId, seq) as Row[]) {
      const ev = fromBinary(EventSchema, body(edit));
      if (ev.kind.case === "messageEdited") {
        ev.kind.value = create(MessageEditedSchema, { targetSeq: ev.kind.value.targetSeq });
      }
      ev.redacted = true;
      q.setBody.run(toBinary(EventSchema, ev), conversationId, big(edit.seq));
    }
  };

  /** Checks one event against the current state; returns the verdict error, if any. */
  const check = (ev: Event): Error | undefined => {
    const conv = q.conv.get(ev.conversationId) as Row | undefined;
    if (ev.kind.case === "conversationCreated") {
      if (conv) return new SeqConflictError(ev.conversationId, big(conv.head_seq) + 1n, ev.seq);
      if (ev.seq !== 1n) return new SeqConflictError(ev.conversationId, 1n, ev.seq);
      const created = ev.kind.value;
      if (created.kind === ConversationKind.DIRECT) {
        const [a, b] = created.memberUserIds;
        const existing = q.byDirectKey.get(directKey(a ?? "", b ?? "")) as Row | undefined;
        if (existing) return new ConversationExistsError(existing.conversation_id as string);
      } else if (ev.clientMsgId) {
        const existing = q.byRequestKey.get(`${ev.actorUserId} ${ev.clientMsgId}`) as
          | Row
          | undefined;
        if (existing) return new ConversationExistsError(existing.conversation_id as string);
      }
      return undefined;
    }
    if (!conv) return new UnknownConversationError(ev.conversationId);
    const expected = big(conv.head_seq) + 1n;
    if (ev.seq !== expected) return new SeqConflictError(ev.conversationId, expected, ev.seq);
    if (ev.clientMsgId) {
      const dup = q.byClientMsgId.get(ev.conversationId, ev.actorUserId, ev.clientMsgId);
      if (dup) return new DuplicateEventError(decode(dup));
    }
    return undefined;
  };

  const project = (ev: Event, atMs: number) => {
    const conv = ev.conversationId;
    const k = ev.kind;
    let targetSeq: bigint | null = null;
    switch (k.case) {
      case "conversationCreated": {
        const direct = k.value.kind === ConversationKind.DIRECT;
        const [a, b] = k.value.memberUserIds;
        q.insertConv.run(
          conv,
          k.value.kind,
          k.value.title,
          ev.actorUserId,
          atMs,
          atMs,
          direct ? directKey(a ?? "", b ?? "") : null,
          !direct && ev.clientMsgId ? `${ev.actorUserId} ${ev.clientMsgId}` : null,
        );
        for (const userId of k.value.memberUserIds) {
          const role = direct ? Role.MEMBER : userId === ev.actorUserId ? Role.OWNER : Role.MEMBER;
          q.join.run({ conv, user: userId, role, seq: ev.seq, at: atMs });
        }
        q.memberCount.run({ conv });
        break;
      }
      case "membersAdded":
        for (const userId of k.value.userIds) {
          q.join.run({
            conv,
            user: userId,
            role: k.value.role || Role.MEMBER,
            seq: ev.seq,
            at: atMs,
          });
        }
        q.memberCount.run({ conv });
        break;
      case "memberRemoved":
        q.leave.run(ev.seq, conv, k.value.userId);
        q.memberCount.run({ conv });
        break;
      case "memberRoleChanged":
        q.setRole.run(k.value.role, conv, k.value.userId);
        break;
      case "conversationRenamed":
        q.rename.run(k.value.title, conv);
        break;
      case "messagePosted":
        // Writing implies having read up to here; bot and system posts do not.
        if (ev.actorUserId && k.value.messageKind === MessageKind.USER) {
          q.senderRead.run({ seq: ev.seq, at: atMs, conv, user: ev.actorUserId });
          if (ev.actorDeviceId) q.advanceDeviceCursor.run(ev.actorDeviceId, conv, ev.seq);
        }
        break;
      case "messageDeleted":
        targetSeq = k.value.targetSeq;
        redact(conv, targetSeq);
        break;
      case "messageEdited":
      case "reactionAdded":
      case "reactionRemoved":
        targetSeq = k.value.targetSeq;
        break;
      case undefined:
        break;
    }
    q.insertEvent.run(
      conv,
      ev.seq,
      kindNumber[k.case as keyof typeof kindNumber] ?? 0,
      ev.actorUserId,
      ev.clientMsgId || null,
      targetSeq,
      eventBytes(ev),
    );
    q.advanceHead.run(ev.seq, atMs, conv);
  };

  const commitTx = db.transaction((events: Event[]) =>
    events.map((ev) => {
      const verdict = check(ev);
      if (verdict) return verdict;
      project(ev, ev.createdAt ? timestampMs(ev.createdAt) : Date.now());
      return undefined;
    }),
  );

  const now = () => Date.now();

  return {
    async commit(events) {
      return commitTx(events);
    },
    async readAfter(conversationId, afterSeq, limit) {
      return q.after.all(conversationId, afterSeq, limit).map(decode);
    },
    async readBefore(conversationId, beforeSeq, minSeq, limit) {
      const before = beforeSeq === 0n ? BigInt(Number.MAX_SAFE_INTEGER) : beforeSeq;
      return q.before.all(conversationId, before, minSeq, limit).map(decode).reverse();
    },
    async readEvent(conversationId, seq) {
      const row = q.eventBody.get(conversationId, seq);
      return row ? decode(row) : undefined;
    },
    async findByClientMsgId(conversationId, actorUserId, clientMsgId) {
      const row = q.byClientMsgId.get(conversationId, actorUserId, clientMsgId);
      return row ? decode(row) : undefined;
    },
    async countUnread(conversationId, userId, afterSeq, cap) {
      return num((q.unread.get(conversationId, afterSeq, userId, cap) as Row).n);
    },

    async putUser(userId, displayName, createOnly) {
      const existing = q.user.get(userId) as Row | undefined;
      if (existing) {
        if (!createOnly && existing.display_name !== displayName) {
          q.updateUser.run(displayName, now(), userId);
        }
        return { user: toUser(q.user.get(userId) as Row), created: false };
      }
      const t = now();
      q.insertUser.run(userId, displayName, t, t);
      return { user: toUser(q.user.get(userId) as Row), created: true };
    },
    async getUsers(userIds) {
      return (q.usersIn.all(JSON.stringify(userIds)) as Row[]).map(toUser);
    },
    async ensureDevice(userId, deviceId, platform) {
      const row = q.device.get(deviceId) as Row | undefined;
      if (row) {
        const d = toDevice(row);
        if (d.userId !== userId) throw new DeviceStateError("device belongs to another user");
        if (d.revokedAtMs) throw new DeviceStateError("device is revoked");
        q.touchDevice.run(now(), deviceId);
        return { ...d, lastActiveAtMs: now() };
      }
      const t = now();
      q.insertDevice.run(deviceId, userId, platform || DevicePlatform.UNSPECIFIED, t, t);
      return toDevice(q.device.get(deviceId) as Row);
    },
    async updateDevice(userId, deviceId, patch) {
      const row = q.device.get(deviceId) as Row | undefined;
      if (!row || row.user_id !== userId) throw new NotFoundError("device not found");
      if (num(row.revoked_at)) throw new DeviceStateError("device is revoked");
      q.updateDevice.run(patch.platform, patch.displayName, patch.pushToken, now(), deviceId);
      return toDevice(q.device.get(deviceId) as Row);
    },
    async getDevice(deviceId) {
      const row = q.device.get(deviceId) as Row | undefined;
      return row ? toDevice(row) : undefined;
    },
    async listDevices(userId) {
      return (q.devicesOf.all(userId) as Row[]).map(toDevice);
    },
    async revokeDevice(userId, deviceId) {
      const row = q.device.get(deviceId) as Row | undefined;
      if (!row || row.user_id !== userId) throw new NotFoundError("device not found");
      q.revokeDevice.run(now(), deviceId);
      return toDevice(q.device.get(deviceId) as Row);
    },
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
      const rows = q.userConversations.all({
        user: userId,
        at: after?.lastActivityMs ?? null,
        conv: after?.conversationId ?? null,
        limit,
      }) as Row[];
      return rows.map((r) => ({ conversation: toConv(r), member: toMember(r) }));
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
    async advanceReceipt(userId, deviceId, conversationId, deliveredSeq, readSeq) {
      const result = db.transaction(() => {
        const changed =
          q.advanceReceipt.run({
            read: readSeq,
            delivered: deliveredSeq,
            at: now(),
            conv: conversationId,
            user: userId,
          }).changes > 0;
        const row = q.member.get(conversationId, userId) as Row | undefined;
        // A refused receipt (not a current member) must not move the device's cursor either.
        const top = deliveredSeq > readSeq ? deliveredSeq : readSeq;
        if (top > 0n && row && row.left_seq === null) {
          q.advanceDeviceCursor.run(deviceId, conversationId, top);
        }
        return { row, changed };
      })();
      if (!result.row || result.row.left_seq !== null) {
        throw new NotMemberError(conversationId, userId);
      }
      return { member: toMember(result.row), changed: result.changed };
    },
    async sharedPeers(userId, candidates) {
      return (q.sharedPeers.all(userId, JSON.stringify(candidates)) as Row[]).map(
        (r) => r.user_id as string,
      );
    },
    async close() {
      if (db.open) db.close();
    },
  };
}
