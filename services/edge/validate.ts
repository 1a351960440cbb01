import type { GetHistoryRequest, SendRequest } from "../../gen/chat/v1/chat_service_pb.js";
import { type MessageContent, Role } from "../../gen/chat/v1/event_pb.js";
import type { ConversationCursor } from "../../gen/chat/v1/model_pb.js";
import type { Limits } from "../../lib/config.js";
import { fail } from "../../lib/errors.js";
import { checkClientKey, checkConversationId, checkText, utf8Length } from "../../lib/validate.js";

const maxAttachments = 10;

/** Validates what a user wrote: text size and UTF-8, reply target, attachment references. */
export function checkContent(content: MessageContent | undefined, limits: Limits): MessageContent {
  if (!content) throw fail.invalid("content is required");
  if (content.text === "" && content.attachments.length === 0) {
    throw fail.invalid("a message needs text or an attachment");
  }
  checkText("content.text", content.text, { min: 0, maxBytes: limits.messageMaxBytes });
  if (content.attachments.length > maxAttachments) {
    throw fail.invalid(`at most ${maxAttachments} attachments`);
  }
  for (const a of content.attachments) {
    if (a.mediaRef === "" || utf8Length(a.mediaRef) > 2048 || !a.mediaRef.isWellFormed()) {
      throw fail.invalid("attachment media_ref must be 1-2048 bytes");
    }
    if (utf8Length(a.mimeType) > 255 || utf8Length(a.fileName) > 255) {
      throw fail.invalid("attachment mime_type and file_name are at most 255 bytes");
    }
    if (!a.mimeType.isWellFormed() || !a.fileName.isWellFormed()) {
      throw fail.invalid("attachment fields must be valid UTF-8");
    }
  }
  return content;
}

export function checkSend(req: SendRequest, limits: Limits) {
  checkConversationId(req.conversationId);
  checkClientKey("client_msg_id", req.clientMsgId, true);
  checkContent(req.content, limits);
}

export function checkSeq(field: string, seq: bigint): bigint {
  if (seq < 1n) throw fail.invalid(`${field} must be at least 1`);
  return seq;
}

export function checkRole(role: Role): Role {
  if (role !== Role.MEMBER && role !== Role.ADMIN && role !== Role.OWNER) {
    throw fail.invalid("role must be MEMBER, ADMIN or OWNER");
  }
  return role;
}

/** At most this many cursors in one subscribe or sync request. */
export const maxCursors = 10_000;

export function checkCursors(cursors: ConversationCursor[]) {
  if (cursors.length > maxCursors) throw fail.invalid(`at most ${maxCursors} cursors`);
  const seen = new Set<string>();
  for (const c of cursors) {
    checkConversationId(c.conversationId, "cursors.conversation_id");
    if (seen.has(c.conversationId)) throw fail.invalid("duplicate cursor for a conversation");
    seen.add(c.conversationId);
  }
  return cursors;
}

export function checkHistory(req: GetHistoryRequest) {
  checkConversationId(req.conversationId);
  if (req.limit > 500) throw fail.invalid("limit must be at most 500");
}
