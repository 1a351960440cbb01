import type { ServiceImpl } from "@connectrpc/connect";
import type { StoreService } from "../../../gen/chat/internal/v1/store_service_pb.js";
import { CursorRangeError, NotFoundError } from "../../../lib/errors.js";
import { receiptView, requireMember, type StoreDeps } from "../views.js";

/** Delivered/read cursors and "read by N of M". */
export const receiptRoutes = (
  deps: StoreDeps,
): Pick<ServiceImpl<typeof StoreService>, "applyReceipt" | "loadReadReceipts"> => ({
  async applyReceipt(req) {
    const { conversation } = await requireMember(deps, req.userId, req.conversationId);
    if (req.deliveredSeq > conversation.headSeq || req.readSeq > conversation.headSeq) {
      throw new CursorRangeError("seq is beyond the conversation's head");
    }
    const { member, changed } = await deps.metadata.advanceReceipt(
      req.userId,
      req.deviceId,
      req.conversationId,
      req.deliveredSeq,
      req.readSeq,
    );
    return { receipt: receiptView(member), changed };
  },

  async loadReadReceipts(req) {
    const { conversation } = await requireMember(deps, req.viewerUserId, req.conversationId);
    if (req.seq < 1n || req.seq > conversation.headSeq) {
      throw new CursorRangeError("seq is outside the conversation");
    }
    const event = await deps.events.readEvent(req.conversationId, req.seq);
    if (!event) throw new NotFoundError("event not found");
    const counted = (await deps.metadata.listMembers(req.conversationId)).filter(
      (m) => m.userId !== event.actorUserId && m.joinedSeq <= req.seq,
    );
    return {
      readCount: counted.filter((m) => m.readSeq >= req.seq).length,
      deliveredCount: counted.filter((m) => m.deliveredSeq >= req.seq).length,
      memberCount: counted.length,
      receipts: counted.map(receiptView),
    };
  },
});
