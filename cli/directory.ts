import { ConversationKind } from "../gen/chat/v1/event_pb.js";
import type { Conversation } from "../gen/chat/v1/model_pb.js";
import { type Account, CliError } from "./account.js";

/** How a conversation is named on screen: `@peer` for a direct chat, the title for a group. */
export function labelOf(c: Conversation, me: string): string {
  if (c.kind === ConversationKind.DIRECT) {
    const peer = c.members.find((m) => m.userId !== me)?.userId;
    return peer ? `@${peer}` : c.conversationId;
  }
  return c.title || c.conversationId;
}

/** Accepts a conversation id or `@user` (the direct chat with that user, created if needed). */
export async function resolveTarget(account: Account, target: string): Promise<string> {
  if (target.startsWith("@")) {
    const res = await account.chat.createDirectConversation({ peerUserId: target.slice(1) });
    return res.conversation!.conversationId;
  }
  if (!target.startsWith("c_")) {
    throw new CliError(`"${target}" is not a target: use a conversation id (c_…) or @user`);
  }
  return target;
}

/** Conversations with their members, fetched once; lists leave members out. */
export class Directory {
  private readonly cache = new Map<string, Promise<Conversation>>();

  constructor(private readonly account: Account) {}

  get(conversationId: string): Promise<Conversation> {
    let hit = this.cache.get(conversationId);
    if (!hit) {
      hit = this.account.chat.getConversation({ conversationId }).then((res) => res.conversation!);
      // A failed lookup is not remembered, so the next event asks again.
      hit.catch(() => this.cache.delete(conversationId));
      this.cache.set(conversationId, hit);
    }
    return hit;
  }

  /** Drops what a membership change or rename made stale. */
  forget(conversationId: string) {
    this.cache.delete(conversationId);
  }

  async label(conversationId: string): Promise<string> {
    try {
      return labelOf(await this.get(conversationId), this.account.login.userId);
    } catch {
      return conversationId;
    }
  }

  /** Other members, or the peer of a direct chat. */
  async peers(conversationId: string): Promise<string[]> {
    const c = await this.get(conversationId);
    return c.members.map((m) => m.userId).filter((u) => u !== this.account.login.userId);
  }
}
