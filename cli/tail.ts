import type { ServerFrame } from "../gen/chat/v1/chat_service_pb.js";
import { ConversationKind, type Event } from "../gen/chat/v1/event_pb.js";
import type { Account } from "./account.js";
import type { Print } from "./commands.js";
import { CursorFile } from "./cursors.js";
import { Directory } from "./directory.js";
import { codeName, eventLine, Notices } from "./format.js";
import { Live } from "./live.js";

/** Events whose effect changes a conversation's members or title. */
const reshapes = new Set(["membersAdded", "memberRemoved", "conversationRenamed"]);

/**
 * Follows every conversation of the user: what was missed since the saved
 * cursors, then live events, receipts, typing and the presence of direct
 * chat peers. Marks delivered what it prints. Resolves on `stop`.
 */
export function tail(account: Account, print: Print, status: Print) {
  const me = account.login.userId;
  const cursors = new CursorFile(account.home, me);
  const dir = new Directory(account);
  const notices = new Notices(me);
  const delivered = new Map<string, bigint>();

  const markDelivered = (conversationId: string, seq: bigint) => {
    if (seq <= (delivered.get(conversationId) ?? 0n)) return;
    if (live.send({ action: { case: "markDelivered", value: { conversationId, seq } } })) {
      delivered.set(conversationId, seq);
    }
  };

  const show = async (e: Event) => {
    if (e.seq <= cursors.get(e.conversationId)) return;
    if (reshapes.has(e.kind.case ?? "")) dir.forget(e.conversationId);
    notices.posted(e);
    print(eventLine(e, `[${await dir.label(e.conversationId)}]`));
    cursors.advance(e.conversationId, e.seq);
  };

  /** Presence is only pushed for watched users: watch every direct chat's peer. */
  const watchPeers = async () => {
    try {
      const res = await account.chat.listConversations({ pageSize: 200 });
      const directs = res.conversations.filter((c) => c.kind === ConversationKind.DIRECT);
      const peers = (await Promise.all(directs.map((c) => dir.peers(c.conversationId)))).flat();
      if (peers.length > 0) {
        live.send({ action: { case: "watchPresence", value: { userIds: [...new Set(peers)] } } });
      }
    } catch (err) {
      status(`presence unavailable: ${(err as Error).message}`);
    }
  };

  const onFrame = async (f: ServerFrame) => {
    const c = f.frame;
    switch (c.case) {
      case "ready":
        status(
          `connected as ${c.value.userId} (device ${c.value.deviceId}); heartbeat every ${c.value.heartbeatIntervalMs / 1000} s`,
        );
        return;
      case "sync": {
        const b = c.value;
        if (b.gap) {
          print(
            `… [${await dir.label(b.conversationId)}] events after #${b.gapAfterSeq} skipped (see history)`,
          );
        }
        for (const e of b.events) await show(e);
        cursors.advance(b.conversationId, b.headSeq);
        markDelivered(b.conversationId, b.headSeq);
        return;
      }
      case "syncComplete":
        status("up to date; waiting for new events (Ctrl-C to stop)");
        void watchPeers();
        return;
      case "event":
        await show(c.value);
        markDelivered(c.value.conversationId, c.value.seq);
        return;
      case "sendAck":
        if (c.value.event) await show(c.value.event);
        return;
      case "receipt": {
        const line = notices.receipt(c.value, `[${await dir.label(c.value.conversationId)}]`);
        if (line) print(line);
        return;
      }
      case "typing": {
        const line = notices.typingFrame(c.value, `[${await dir.label(c.value.conversationId)}]`);
        if (line) print(line);
        return;
      }
      case "presence": {
        const line = notices.presenceFrame(c.value);
        if (line) print(line);
        return;
      }
      case "error":
        status(`server refused a frame: [${codeName(c.value.code)}] ${c.value.message}`);
        return;
      default:
    }
  };

  const live = new Live({ account, cursors: () => cursors.all(), onFrame, status });
  return {
    done: live.start(),
    async stop() {
      await live.stop();
      cursors.save();
    },
  };
}
