import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type ChatService, HistoryDirection } from "../../../gen/chat/v1/chat_service_pb.js";
import type { EventSchema } from "../../../gen/chat/v1/event_pb.js";
import { fail } from "../../../lib/errors.js";
import {
  checkClientKey,
  checkConversationId,
  checkEmoji,
  checkText,
} from "../../../lib/validate.js";
import { actorOf } from "../actions.js";
import { type Caller, caller } from "../auth.js";
import type { EdgeContext } from "../context.js";
import { checkCursors, checkHistory, checkSeq } from "../validate.js";
import { answersInBinary, historyAnswer, storedSyncBatch } from "../wire.js";

/** Most events one Sync response carries before it sets has_more. */
const syncMaxEvents = 5000;

/** Sending, changing and reading messages. */
export const messageRoutes = (
  ctx: EdgeContext,
): Pick<
  ServiceImpl<typeof ChatService>,
  | "send"
  | "editMessage"
  | "deleteMessage"
  | "addReaction"
  | "removeReaction"
  | "getHistory"
  | "sync"
> => {
  const change = async (
    who: Caller,
    conversationId: string,
    clientMsgId: string,
    kind: NonNullable<MessageInitShape<typeof EventSchema>["kind"]>,
  ) => {
    checkConversationId(conversationId);
    checkClientKey("client_msg_id", clientMsgId, false);
    const res = await ctx.router.apply({
      actor: actorOf(who),
      proposal: { conversationId, clientMsgId, kind },
    });
    if (!res.event) throw fail.precondition("the change had no effect");
    return { event: res.event };
  };
  return {
    send: (req, hctx) => ctx.actions.send(caller(hctx), req),

    editMessage(req, hctx) {
      checkSeq("target_seq", req.targetSeq);
      checkText("text", req.text, { min: 1, maxBytes: ctx.config.limits.messageMaxBytes });
      return change(caller(hctx), req.conversationId, req.clientMsgId, {
        case: "messageEdited",
        value: { targetSeq: req.targetSeq, text: req.text },
      });
    },

    deleteMessage(req, hctx) {
      checkSeq("target_seq", req.targetSeq);
      return change(caller(hctx), req.conversationId, req.clientMsgId, {
        case: "messageDeleted",
        value: { targetSeq: req.targetSeq },
      });
    },

    addReaction(req, hctx) {
      checkSeq("target_seq", req.targetSeq);
      checkEmoji(req.emoji);
      return change(caller(hctx), req.conversationId, req.clientMsgId, {
        case: "reactionAdded",
        value: { targetSeq: req.targetSeq, emoji: req.emoji },
      });
    },

    removeReaction(req, hctx) {
      checkSeq("target_seq", req.targetSeq);
      checkEmoji(req.emoji);
      return change(caller(hctx), req.conversationId, req.clientMsgId, {
        case: "reactionRemoved",
        value: { targetSeq: req.targetSeq, emoji: req.emoji },
      });
    },

    async getHistory(req, hctx) {
      checkHistory(req);
      // A binary answer carries the events as the store holds them (see historyAnswer).
      const binary = answersInBinary(hctx.requestHeader.get("content-type"));
      const res = await ctx.store.readHistory({
        viewerUserId: caller(hctx).userId,
        conversationId: req.conversationId,
        anchorSeq: req.anchorSeq,
        backward: req.direction !== HistoryDirection.FORWARD,
        limit: req.limit || 50,
        encoded: binary,
      });
      return historyAnswer(res, binary);
    },

    async sync(req, hctx) {
      checkCursors(req.cursors);
      if (req.limitPerConversation > 1000) {
        throw fail.invalid("limit_per_conversation must be at most 1000");
      }
      const who = caller(hctx);
      // A binary answer carries the events as the store holds them (see storedSyncBatch).
      const binary = answersInBinary(hctx.requestHeader.get("content-type"));
      const res = await ctx.store.readSync({
        viewerUserId: who.userId,
        deviceId: who.deviceId,
        cursors: req.cursors,
        limitPerConversation: req.limitPerConversation,
        maxEvents: syncMaxEvents,
        encoded: binary,
      });
      // A store that predates `encoded` answers with decoded batches.
      const batches =
        res.encodedBatches.length > 0 ? res.encodedBatches.map(storedSyncBatch) : res.batches;
      return { batches, hasMore: res.hasMore };
    },
  };
};
