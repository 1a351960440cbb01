import { create } from "@bufbuild/protobuf";
import {
  type ConversationKind,
  type Event,
  MessageEditedSchema,
  MessagePostedSchema,
  type Role,
} from "../../gen/chat/v1/event_pb.js";
import type { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type {
  ConversationRecord,
  DeviceRecord,
  MemberRecord,
  UserRecord,
} from "./metadata-store.js";

// Row shapes shared by the SQL and CQL stores: both name their columns alike.

/** Event kinds as stored in events.kind: the oneof field numbers of Event. */
export const kindNumber: Record<NonNullable<Event["kind"]["case"]>, number> = {
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

export type Row = Record<string, unknown>;

export const big = (v: unknown): bigint => BigInt(v as number | bigint);
export const num = (v: unknown): number => Number(v as number | bigint);

/** The key that makes a direct chat unique per user pair, independent of order. */
export const directKey = (a: string, b: string) => (a < b ? `${a} ${b}` : `${b} ${a}`);

export const toConv = (r: Row): ConversationRecord => ({
  conversationId: r.conversation_id as string,
  kind: num(r.kind) as ConversationKind,
  title: r.title as string,
  createdBy: r.created_by as string,
  createdAtMs: num(r.created_at),
  headSeq: big(r.head_seq),
  lastActivityMs: num(r.last_activity_at),
  memberCount: num(r.member_count),
});
export const toMember = (r: Row): MemberRecord => ({
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
export const toUser = (r: Row): UserRecord => ({
  userId: r.user_id as string,
  displayName: r.display_name as string,
  createdAtMs: num(r.created_at),
  updatedAtMs: num(r.updated_at),
});
export const toDevice = (r: Row): DeviceRecord => ({
  deviceId: r.device_id as string,
  userId: r.user_id as string,
  platform: num(r.platform) as DevicePlatform,
  displayName: r.display_name as string,
  pushToken: r.push_token as string,
  createdAtMs: num(r.created_at),
  lastActiveAtMs: num(r.last_active_at),
  revokedAtMs: num(r.revoked_at),
});

/** The message an event changes, for kinds that target one (edits, deletions, reactions). */
export function targetOf(ev: Event): bigint | null {
  switch (ev.kind.case) {
    case "messageEdited":
    case "messageDeleted":
    case "reactionAdded":
    case "reactionRemoved":
      return ev.kind.value.targetSeq;
    default:
      return null;
  }
}

/**
 * A deleted message or an edit of it as stored from then on: its place in the
 * sequence and its kind stay, what it said goes. Modifies `ev`.
 */
export function redact(ev: Event): Event {
  if (ev.kind.case === "messagePosted") {
    ev.kind.value = create(MessagePostedSchema, { messageKind: ev.kind.value.messageKind });
  } else if (ev.kind.case === "messageEdited") {
    ev.kind.value = create(MessageEditedSchema, { targetSeq: ev.kind.value.targetSeq });
  }
  ev.redacted = true;
  return ev;
}
