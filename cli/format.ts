import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import {
  ConversationKind,
  type Event,
  MemberRemovalReason,
  MessageKind,
  Role,
} from "../gen/chat/v1/event_pb.js";
import type { Conversation, Presence, Receipt, Typing } from "../gen/chat/v1/model_pb.js";

const pad = (n: number) => String(n).padStart(2, "0");

/** Local wall-clock time, HH:MM:SS. */
export function clock(ts: Timestamp | undefined): string {
  const d = ts ? new Date(timestampMs(ts)) : new Date();
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const roleName = (r: Role) => (Role[r] ?? "unknown").toLowerCase();

const list = (ids: readonly string[]) => ids.join(", ");

/** One line for what the event did, without time or seq. */
export function describe(e: Event): string {
  const who = e.actorUserId || "system";
  if (e.redacted) return `${who}: (deleted)`;
  const k = e.kind;
  switch (k.case) {
    case "messagePosted": {
      const tag = k.value.messageKind === MessageKind.BOT ? " [bot]" : "";
      const content = k.value.content;
      const reply = content?.replyToSeq ? ` (reply to #${content.replyToSeq})` : "";
      const files = content?.attachments.length
        ? ` [${content.attachments.length} attachment(s)]`
        : "";
      return `${who}${tag}: ${content?.text ?? ""}${reply}${files}`;
    }
    case "conversationCreated":
      return k.value.kind === ConversationKind.GROUP
        ? `${who} created group "${k.value.title}" with ${list(k.value.memberUserIds)}`
        : `${who} started a direct chat with ${list(k.value.memberUserIds.filter((u) => u !== who))}`;
    case "messageEdited":
      return `${who} edited #${k.value.targetSeq}: ${k.value.text}`;
    case "messageDeleted":
      return `${who} deleted #${k.value.targetSeq}`;
    case "reactionAdded":
      return `${who} reacted ${k.value.emoji} to #${k.value.targetSeq}`;
    case "reactionRemoved":
      return `${who} removed reaction ${k.value.emoji} from #${k.value.targetSeq}`;
    case "membersAdded":
      return `${who} added ${list(k.value.userIds)}`;
    case "memberRemoved":
      return k.value.reason === MemberRemovalReason.LEFT
        ? `${k.value.userId} left`
        : `${who} removed ${k.value.userId}`;
    case "memberRoleChanged":
      return `${who} made ${k.value.userId} ${roleName(k.value.role)}`;
    case "conversationRenamed":
      return `${who} renamed the group to "${k.value.title}"`;
    case undefined:
      return `${who}: (unknown event)`;
  }
}

/** `12:01:02 [label] bob: hello  #5` */
export function eventLine(e: Event, label = ""): string {
  return `${clock(e.createdAt)} ${label ? `${label} ` : ""}${describe(e)}  #${e.seq}`;
}

/** A short preview of a conversation's last event for lists. */
export function preview(e: Event | undefined, max = 60): string {
  if (!e) return "";
  const text = describe(e).replace(/\s+/g, " ");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function kindName(c: Conversation): string {
  return c.kind === ConversationKind.DIRECT ? "direct" : "group";
}

/**
 * Turns receipt, typing and presence frames into lines, printing only
 * changes: a typing refresh or a repeated presence state says nothing new.
 */
export class Notices {
  private receipts = new Map<string, { read: bigint; delivered: bigint }>();
  private typing = new Set<string>();
  private presence = new Map<string, boolean>();

  constructor(private readonly me: string) {}

  receipt(r: Receipt, label = ""): string | undefined {
    if (r.userId === this.me) return undefined;
    const key = `${r.conversationId} ${r.userId}`;
    const last = this.receipts.get(key) ?? { read: 0n, delivered: 0n };
    this.receipts.set(key, {
      read: r.readSeq > last.read ? r.readSeq : last.read,
      delivered: r.deliveredSeq > last.delivered ? r.deliveredSeq : last.delivered,
    });
    const where = label ? ` in ${label}` : "";
    const read = r.readSeq > last.read;
    const received = r.deliveredSeq > last.delivered && r.deliveredSeq > r.readSeq;
    if (read && received) {
      return `${r.userId} received up to ${r.deliveredSeq}, read up to ${r.readSeq}${where}`;
    }
    if (read) return `${r.userId} read up to ${r.readSeq}${where}`;
    if (received) return `${r.userId} received up to ${r.deliveredSeq}${where}`;
    return undefined;
  }

  typingFrame(t: Typing, label = ""): string | undefined {
    if (t.userId === this.me) return undefined;
    const key = `${t.conversationId} ${t.userId}`;
    if (!t.typing) {
      this.typing.delete(key);
      return undefined;
    }
    if (this.typing.has(key)) return undefined;
    this.typing.add(key);
    return `${t.userId} is typing…${label ? ` in ${label}` : ""}`;
  }

  /** A message from a user ends their typing indicator. */
  posted(e: Event) {
    this.typing.delete(`${e.conversationId} ${e.actorUserId}`);
  }

  presenceFrame(p: Presence): string | undefined {
    if (p.userId === this.me || this.presence.get(p.userId) === p.online) return undefined;
    this.presence.set(p.userId, p.online);
    if (p.online) return `${p.userId} is online`;
    return p.lastSeenAt
      ? `${p.userId} is offline (last seen ${clock(p.lastSeenAt)})`
      : `${p.userId} is offline`;
  }
}

export { roleName };

/** `permission_denied` for a numeric code, as Connect prints codes. */
export function codeName(code: number): string {
  const name = Code[code];
  return name
    ? name.replace(/[A-Z]/g, (c, i: number) => (i ? "_" : "") + c.toLowerCase())
    : `code ${code}`;
}
