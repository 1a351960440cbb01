import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { ChatService } from "../../../gen/chat/v1/chat_service_pb.js";
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
import { checkSeq } from "../validate.js";
import { answersInBinary } from "../wire.js";

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
    // Edits, deletes and reactions are events like messages: they share its budget.
    await ctx.actions.spend(who);
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
      const binary = answersInBinary(hctx.requestHeader.get("content-type"));
      return ctx.actions.getHistory(caller(hctx), req, binary);
    },

    async sync(req, hctx) {
      const binary = answersInBinary(hctx.requestHeader.get("content-type"));
      return ctx.actions.sync(caller(hctx), req, binary);
    },
  };
};
