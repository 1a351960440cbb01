import type { ServiceImpl } from "@connectrpc/connect";
import type { ChatService } from "../../../gen/chat/v1/chat_service_pb.js";
import { checkConversationId } from "../../../lib/validate.js";
import { caller } from "../auth.js";
import type { EdgeContext } from "../context.js";
import { checkSeq } from "../validate.js";

/** Delivered/read cursors and read receipts. */
export const receiptRoutes = (
  ctx: EdgeContext,
): Pick<ServiceImpl<typeof ChatService>, "markDelivered" | "markRead" | "getReadReceipts"> => ({
  async markDelivered(req, hctx) {
    const receipt = await ctx.actions.markDelivered(caller(hctx), req);
    return receipt ? { receipt } : {};
  },
  async markRead(req, hctx) {
    const receipt = await ctx.actions.markRead(caller(hctx), req);
    return receipt ? { receipt } : {};
  },
  async getReadReceipts(req, hctx) {
    checkConversationId(req.conversationId);
    checkSeq("seq", req.seq);
    const res = await ctx.store.loadReadReceipts({
      viewerUserId: caller(hctx).userId,
      conversationId: req.conversationId,
      seq: req.seq,
    });
    return {
      readCount: res.readCount,
      deliveredCount: res.deliveredCount,
      memberCount: res.memberCount,
      receipts: res.receipts,
    };
  },
});
