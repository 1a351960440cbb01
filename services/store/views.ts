import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Conversation, Member, Receipt } from "../../gen/chat/v1/model_pb.js";
import { ConversationSchema, MemberSchema, ReceiptSchema } from "../../gen/chat/v1/model_pb.js";
import type { EventStore } from "../../lib/backends/event-store.js";
import type {
  ConversationRecord,
  MemberRecord,
  MetadataStore,
} from "../../lib/backends/metadata-store.js";
import { NotMemberError, UnknownConversationError } from "../../lib/errors.js";

export const unreadCap = 1000;

export interface StoreDeps {
  events: EventStore;
  metadata: MetadataStore;
  syncLimit: number;
}

/**
 * Loads a conversation and the viewer's membership row, also one it left
 * (leftSeq set), or throws NOT_FOUND / PERMISSION_DENIED for a non-member.
 * For reads a former member is still owed: its events up to the removal.
 */
export async function requireMembership(
  deps: StoreDeps,
  viewerUserId: string,
  conversationId: string,
): Promise<{ conversation: ConversationRecord; member: MemberRecord }> {
  const conversation = await deps.metadata.getConversation(conversationId);
  if (!conversation) throw new UnknownConversationError(conversationId);
  const member = await deps.metadata.getMember(conversationId, viewerUserId);
  if (!member) throw new NotMemberError(conversationId, viewerUserId);
  return { conversation, member };
}

/** Loads a conversation and the viewer's current membership, or throws NOT_FOUND / PERMISSION_DENIED. */
export async function requireMember(
  deps: StoreDeps,
  viewerUserId: string,
  conversationId: string,
): Promise<{ conversation: ConversationRecord; member: MemberRecord }> {
  const found = await requireMembership(deps, viewerUserId, conversationId);
  if (found.member.leftSeq !== undefined) throw new NotMemberError(conversationId, viewerUserId);
  return found;
}

export const memberView = (m: MemberRecord): Member =>
  create(MemberSchema, {
    userId: m.userId,
    role: m.role,
    joinedSeq: m.joinedSeq,
    joinedAt: timestampFromMs(m.joinedAtMs),
  });

export const receiptView = (m: MemberRecord): Receipt =>
  create(ReceiptSchema, {
    conversationId: m.conversationId,
    userId: m.userId,
    deliveredSeq: m.deliveredSeq,
    readSeq: m.readSeq,
    ...(m.receiptUpdatedAtMs ? { updatedAt: timestampFromMs(m.receiptUpdatedAtMs) } : {}),
  });

/** The conversation as one member sees it: last event, own cursors, unread count. */
export async function conversationView(
  deps: StoreDeps,
  conversation: ConversationRecord,
  member: MemberRecord,
  withMembers: boolean,
): Promise<Conversation> {
  const readFloor = member.readSeq > member.joinedSeq - 1n ? member.readSeq : member.joinedSeq - 1n;
  const [lastEvent, unread, members] = await Promise.all([
    deps.events.readEvent(conversation.conversationId, conversation.headSeq),
    deps.events.countUnread(conversation.conversationId, member.userId, readFloor, unreadCap),
    withMembers ? deps.metadata.listMembers(conversation.conversationId) : Promise.resolve([]),
  ]);
  return create(ConversationSchema, {
    conversationId: conversation.conversationId,
    kind: conversation.kind,
    title: conversation.title,
    createdAt: timestampFromMs(conversation.createdAtMs),
    headSeq: conversation.headSeq,
    lastActivityAt: timestampFromMs(conversation.lastActivityMs),
    ...(lastEvent ? { lastEvent } : {}),
    memberCount: conversation.memberCount,
    members: members.map(memberView),
    myRole: member.role,
    myDeliveredSeq: member.deliveredSeq,
    myReadSeq: member.readSeq,
    unreadCount: unread,
    visibleFromSeq: member.joinedSeq,
  });
}
