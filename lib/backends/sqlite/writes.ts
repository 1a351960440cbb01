import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type Database from "better-sqlite3";
import {
  ConversationKind,
  type Event,
  EventSchema,
  MessageKind,
  Role,
} from "../../../gen/chat/v1/event_pb.js";
import { DevicePlatform } from "../../../gen/chat/v1/model_pb.js";
import { setBounded } from "../../bounded-map.js";
import {
  BackendUnavailableError,
  ConversationExistsError,
  DeviceStateError,
  DuplicateEventError,
  NotFoundError,
  NotMemberError,
  SeqConflictError,
  UnknownConversationError,
} from "../../errors.js";
import { decodeEvent, encodeEvent } from "../../event-bytes.js";
import type { MetadataStore } from "../metadata-store.js";
import {
  big,
  directKey,
  kindNumber,
  num,
  type Row,
  redact as redacted,
  targetOf,
  toDevice,
  toMember,
  toUser,
} from "../records.js";
import { indexed } from "./schema.js";

/** Conversations whose heads the writer remembers. */
const maxHeads = 200_000;

/**
 * A domain error as it crosses from the writer thread: its class name and
 * the fields that rebuild it (see fromWire). Events travel as their bytes.
 */
export interface WireError {
  name: string;
  message: string;
  conversationId?: string;
  userId?: string;
  expected?: bigint;
  got?: bigint;
  original?: Uint8Array;
}

export function toWire(err: unknown): WireError {
  if (err instanceof SeqConflictError) {
    return {
      name: err.name,
      message: err.message,
      conversationId: err.conversationId,
      expected: err.expected,
      got: err.got,
    };
  }
  if (err instanceof DuplicateEventError) {
    return {
      name: err.name,
      message: err.message,
      original: toBinary(EventSchema, err.original),
    };
  }
  if (err instanceof ConversationExistsError || err instanceof UnknownConversationError) {
    return { name: err.name, message: err.message, conversationId: err.conversationId };
  }
  if (err instanceof NotMemberError) {
    return {
      name: err.name,
      message: err.message,
      conversationId: err.conversationId,
      userId: err.userId,
    };
  }
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: "Error", message: String(err) };
}

/** Rebuilds the domain error; anything unknown becomes a plain Error with its message. */
export function fromWire(w: WireError): Error {
  switch (w.name) {
    case "SeqConflictError":
      return new SeqConflictError(w.conversationId ?? "", w.expected ?? 0n, w.got ?? 0n);
    case "DuplicateEventError":
      return new DuplicateEventError(decodeEvent(w.original ?? new Uint8Array()));
    case "ConversationExistsError":
      return new ConversationExistsError(w.conversationId ?? "");
    case "UnknownConversationError":
      return new UnknownConversationError(w.conversationId ?? "");
    case "NotMemberError":
      return new NotMemberError(w.conversationId ?? "", w.userId ?? "");
    case "DeviceStateError":
      return new DeviceStateError(w.message);
    case "NotFoundError":
      return new NotFoundError(w.message);
    case "BackendUnavailableError":
      return new BackendUnavailableError(w.message);
    default: {
      const e = new Error(w.message);
      e.name = w.name;
      return e;
    }
  }
}

/** The MetadataStore methods that write, run synchronously on the writer's connection. */
type MetadataWrites = {
  [K in
    | "putUser"
    | "ensureDevice"
    | "updateDevice"
    | "revokeDevice"
    | "forgetPushToken"
    | "advanceReceipt"]: (
    ...args: Parameters<MetadataStore[K]>
  ) => Awaited<ReturnType<MetadataStore[K]>>;
};

/** Every write the store makes, with its arguments and result. */
export interface WriteOps extends MetadataWrites {
  /**
   * One outcome per event: its encoding once committed, or the verdict that
   * refused it (see EventStore.commit). The caller keeps the bytes, so
   * fan-out sends what was stored without encoding the event again.
   */
  commit(events: Event[]): (Uint8Array | WireError)[];
}

/** The write side as the writer thread holds it. */
export interface Writes extends WriteOps {
  /** Drops cached state after a write rolled back: it may describe uncommitted changes. */
  forget(): void;
}

export type WriteOp = keyof WriteOps;

/**
 * The write side of the SQLite store, on the writer's connection. Each op
 * runs synchronously inside whatever transaction the caller holds, so the
 * writer thread can commit many ops, from many callers, with one fsync.
 */
export function createWrites(db: Database.Database): Writes {
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
      `UPDATE conversations SET head_seq = ?, last_activity_at = ?, activity_rev = ?
       WHERE conversation_id = ?`,
    ),
    maxRev: db.prepare("SELECT coalesce(max(activity_rev), 0) AS rev FROM conversations"),
    rename: db.prepare("UPDATE conversations SET title = ? WHERE conversation_id = ?"),
    memberCount: db.prepare(
      `UPDATE conversations SET member_count =
        (SELECT count(*) FROM members WHERE conversation_id = @conv AND left_seq IS NULL)
       WHERE conversation_id = @conv`,
    ),
    member: db.prepare("SELECT * FROM members WHERE conversation_id = ? AND user_id = ?"),
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
    // Only from the seq right below: a device that sends has not thereby
    // received what others posted since its cursor.
    extendDeviceCursor: db.prepare(
      `UPDATE device_cursors SET delivered_seq = ?
       WHERE device_id = ? AND conversation_id = ? AND delivered_seq = ?`,
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
    // The flag lets unread counts skip deleted messages without decoding them.
    setRedacted: db.prepare(
      "UPDATE events SET body = ?, redacted = 1 WHERE conversation_id = ? AND seq = ?",
    ),
    editsOf: db.prepare(indexed.edits.sql),
    byClientMsgId: db.prepare(
      "SELECT body FROM events WHERE conversation_id = ? AND actor_user_id = ? AND client_msg_id = ?",
    ),
    user: db.prepare("SELECT * FROM users WHERE user_id = ?"),
    insertUser: db.prepare(
      "INSERT INTO users (user_id, display_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
    ),
    updateUser: db.prepare("UPDATE users SET display_name = ?, updated_at = ? WHERE user_id = ?"),
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
    takePushToken: db.prepare(indexed.takePushToken.sql),
    forgetPushToken: db.prepare(
      "UPDATE devices SET push_token = '' WHERE device_id = ? AND push_token = ?",
    ),
    advanceReceipt: db.prepare(
      `UPDATE members SET read_seq = max(read_seq, @read),
         delivered_seq = max(delivered_seq, @read, @delivered), receipt_at = @at
       WHERE conversation_id = @conv AND user_id = @user AND left_seq IS NULL
         AND (read_seq < @read OR delivered_seq < max(@read, @delivered))`,
    ),
  };

  const body = (row: unknown) => (row as { body: Uint8Array }).body;

  /** Removes what a deleted message said, keeping its place in the sequence. */
  const redact = (conversationId: string, seq: bigint) => {
    const row = q.eventBody.get(conversationId, seq);
    if (row) {
      q.setRedacted.run(
        toBinary(EventSchema, redacted(fromBinary(EventSchema, body(row)))),
        conversationId,
        seq,
      );
    }
    for (const edit of q.editsOf.all(conversationId, seq) as Row[]) {
      const ev = redacted(fromBinary(EventSchema, body(edit)));
      q.setRedacted.run(toBinary(EventSchema, ev), conversationId, big(edit.seq));
    }
  };

  /**
   * Heads of conversations as committed, so checking an event's seq needs no
   * read. Exact because this connection is the database's only writer; a
   * write that rolls back drops it (see forget). Bounded: a conversation
   * forgotten is read again (its row's head is current between commits).
   */
  const heads = new Map<string, bigint>();
  const headOf = (conversationId: string): bigint | undefined => {
    let head = heads.get(conversationId);
    if (head === undefined) {
      const row = q.conv.get(conversationId) as Row | undefined;
      if (!row) return undefined;
      head = big(row.head_seq);
      setBounded(heads, conversationId, head, maxHeads);
    }
    return head;
  };

  /** Checks seq and creation keys; returns the verdict error, if any. */
  const check = (ev: Event): Error | undefined => {
    const head = headOf(ev.conversationId);
    if (ev.kind.case === "conversationCreated") {
      if (head !== undefined) return new SeqConflictError(ev.conversationId, head + 1n, ev.seq);
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
    if (head === undefined) return new UnknownConversationError(ev.conversationId);
    if (ev.seq !== head + 1n) return new SeqConflictError(ev.conversationId, head + 1n, ev.seq);
    return undefined;
  };

  /**
   * The last activity_rev handed out: every commit that moves conversations
   * gives them the next one, so a list read can tell what moved after it.
   * Loaded on first use (a scan of conversations, once per writer).
   */
  let rev: bigint | undefined;

  /**
   * Stores the event; its (conversation, actor, client_msg_id) key is unique,
   * so a reused key fails the insert (and changes nothing) instead of costing
   * a lookup for every event. Returns the original event on such a reuse.
   */
  const insert = (ev: Event, bytes: Uint8Array): Event | undefined => {
    try {
      q.insertEvent.run(
        ev.conversationId,
        ev.seq,
        kindNumber[ev.kind.case as keyof typeof kindNumber] ?? 0,
        ev.actorUserId,
        // A group's request id is keyed by the conversations table, apart
        // from the creator's message keys in it (see check).
        ev.kind.case === "conversationCreated" ? null : ev.clientMsgId || null,
        targetOf(ev),
        bytes,
      );
      return undefined;
    } catch (err) {
      if ((err as { code?: string }).code !== "SQLITE_CONSTRAINT_UNIQUE" || !ev.clientMsgId) {
        throw err;
      }
      const dup = q.byClientMsgId.get(ev.conversationId, ev.actorUserId, ev.clientMsgId);
      if (!dup) throw err;
      return decodeEvent(body(dup));
    }
  };

  /** The metadata an event changes (the head is advanced once per commit). */
  const project = (ev: Event, atMs: number) => {
    const conv = ev.conversationId;
    const k = ev.kind;
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
          if (ev.actorDeviceId) {
            q.extendDeviceCursor.run(ev.seq, ev.actorDeviceId, conv, ev.seq - 1n);
          }
        }
        break;
      case "messageDeleted":
        redact(conv, k.value.targetSeq);
        break;
      default:
        break;
    }
  };

  const now = () => Date.now();

  return {
    commit(events) {
      const advanced = new Map<string, { seq: bigint; atMs: number }>();
      const outcomes = events.map((ev) => {
        const verdict = check(ev);
        if (verdict) return toWire(verdict);
        const bytes = encodeEvent(ev);
        const original = insert(ev, bytes);
        if (original) return toWire(new DuplicateEventError(original));
        const atMs = ev.createdAt ? timestampMs(ev.createdAt) : now();
        project(ev, atMs);
        setBounded(heads, ev.conversationId, ev.seq, maxHeads);
        advanced.set(ev.conversationId, { seq: ev.seq, atMs });
        return bytes;
      });
      if (advanced.size > 0) {
        rev ??= big((q.maxRev.get() as Row).rev);
        rev++;
        for (const [conv, h] of advanced) q.advanceHead.run(h.seq, h.atMs, rev, conv);
      }
      return outcomes;
    },
    forget() {
      // rev stays: a revision a rolled-back commit took is skipped, and they need only increase.
      heads.clear();
    },
    putUser(userId, displayName, createOnly) {
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
    ensureDevice(userId, deviceId, platform) {
      const row = q.device.get(deviceId) as Row | undefined;
      if (row) {
        const d = toDevice(row);
        if (d.userId !== userId) throw new DeviceStateError("device belongs to another user");
        if (d.revokedAtMs) throw new DeviceStateError("device is revoked");
        const t = now();
        q.touchDevice.run(t, deviceId);
        return { ...d, lastActiveAtMs: t };
      }
      const t = now();
      q.insertDevice.run(deviceId, userId, platform || DevicePlatform.UNSPECIFIED, t, t);
      return toDevice(q.device.get(deviceId) as Row);
    },
    updateDevice(userId, deviceId, patch) {
      const row = q.device.get(deviceId) as Row | undefined;
      if (!row || row.user_id !== userId) throw new NotFoundError("device not found");
      if (num(row.revoked_at)) throw new DeviceStateError("device is revoked");
      // A token names one app install: whoever registers it last gets its notifications.
      if (patch.pushToken !== "") q.takePushToken.run(patch.pushToken, deviceId);
      q.updateDevice.run(patch.platform, patch.displayName, patch.pushToken, now(), deviceId);
      return toDevice(q.device.get(deviceId) as Row);
    },
    forgetPushToken(deviceId, pushToken) {
      return q.forgetPushToken.run(deviceId, pushToken).changes > 0;
    },
    revokeDevice(userId, deviceId) {
      const row = q.device.get(deviceId) as Row | undefined;
      if (!row || row.user_id !== userId) throw new NotFoundError("device not found");
      q.revokeDevice.run(now(), deviceId);
      return toDevice(q.device.get(deviceId) as Row);
    },
    advanceReceipt(userId, deviceId, conversationId, deliveredSeq, readSeq) {
      const top = deliveredSeq > readSeq ? deliveredSeq : readSeq;
      const row = q.member.get(conversationId, userId) as Row | undefined;
      const leftSeq = row && row.left_seq !== null ? big(row.left_seq) : undefined;
      // Checked before anything moves: a refused receipt moves no cursor, the device's included.
      if (!row || (leftSeq !== undefined && top > leftSeq)) {
        throw new NotMemberError(conversationId, userId);
      }
      // A former member's own cursors are shown to nobody any more: only the
      // device's moves, so sync stops serving it what it acknowledged.
      const changed =
        leftSeq === undefined &&
        q.advanceReceipt.run({
          read: readSeq,
          delivered: deliveredSeq,
          at: now(),
          conv: conversationId,
          user: userId,
        }).changes > 0;
      if (top > 0n) q.advanceDeviceCursor.run(deviceId, conversationId, top);
      const member = changed ? (q.member.get(conversationId, userId) as Row) : row;
      return { member: toMember(member), changed };
    },
  };
}
