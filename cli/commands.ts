import { randomUUID } from "node:crypto";
import { HistoryDirection } from "../gen/chat/v1/chat_service_pb.js";
import type { Conversation } from "../gen/chat/v1/model_pb.js";
import type { Account } from "./account.js";
import { Directory, labelOf, resolveTarget } from "./directory.js";
import { eventLine, kindName, preview, roleName } from "./format.js";

export type Print = (line: string) => void;

export async function whoami(account: Account, print: Print) {
  const me = await account.chat.getMe({});
  const name = me.user?.displayName ? ` ("${me.user.displayName}")` : "";
  print(`${account.login.userId}${name} on device ${account.login.deviceId} at ${account.server}`);
}

/** Every conversation, most recently active first, with unread count and last event. */
export async function conversations(account: Account, print: Print) {
  const all: Conversation[] = [];
  let pageToken = "";
  do {
    const res = await account.chat.listConversations({ pageSize: 200, pageToken });
    all.push(...res.conversations);
    pageToken = res.nextPageToken;
  } while (pageToken);
  if (all.length === 0) {
    print("no conversations yet: start one with `dm <user>` or `send @<user> <text>`");
    return;
  }
  const dir = new Directory(account);
  const me = account.login.userId;
  const rows = await Promise.all(
    all.map(async (c) => [
      c.conversationId,
      kindName(c),
      // Lists carry no members, so a direct chat's peer needs one lookup.
      c.title ? c.title : labelOf(await dir.get(c.conversationId), me),
      `unread ${c.unreadCount}`,
      preview(c.lastEvent),
    ]),
  );
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) {
    print(r.map((cell, i) => (i < 4 ? cell.padEnd(widths[i]!) : cell)).join("  "));
  }
}

export async function dm(account: Account, print: Print, user: string) {
  const res = await account.chat.createDirectConversation({ peerUserId: user });
  print(res.conversation!.conversationId);
}

export async function group(account: Account, print: Print, title: string, users: string[]) {
  const res = await account.chat.createGroupConversation({
    title,
    memberUserIds: users,
    clientRequestId: randomUUID(),
  });
  print(res.conversation!.conversationId);
}

export async function send(account: Account, print: Print, target: string, text: string) {
  const conversationId = await resolveTarget(account, target);
  const res = await account.chat.send({
    conversationId,
    clientMsgId: randomUUID(),
    content: { text },
  });
  print(`sent #${res.event!.seq} to ${conversationId}`);
}

export async function history(account: Account, print: Print, target: string, limit: number) {
  const conversationId = await resolveTarget(account, target);
  const res = await account.chat.getHistory({
    conversationId,
    direction: HistoryDirection.BACKWARD,
    limit,
  });
  if (res.hasMore) print(`… older events exist (showing the last ${res.events.length})`);
  for (const e of res.events) print(eventLine(e));
}

/** Marks everything up to the newest event read. */
export async function read(account: Account, print: Print, target: string) {
  const conversationId = await resolveTarget(account, target);
  const { conversation } = await account.chat.getConversation({ conversationId });
  const seq = conversation!.headSeq;
  const res = await account.chat.markRead({ conversationId, seq });
  print(`read up to #${res.receipt?.readSeq ?? seq} in ${conversationId}`);
}

export async function members(account: Account, print: Print, target: string) {
  const conversationId = await resolveTarget(account, target);
  const { conversation } = await account.chat.getConversation({ conversationId });
  const list = conversation!.members;
  const width = Math.max(...list.map((m) => m.userId.length));
  for (const m of list) {
    print(`${m.userId.padEnd(width)}  ${roleName(m.role).padEnd(6)}  joined at #${m.joinedSeq}`);
  }
}
