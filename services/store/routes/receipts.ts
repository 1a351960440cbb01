import type { ServiceImpl } from "@connectrpc/connect";
import type { StoreService } from "../../../gen/chat/internal/v1/store_service_pb.js";
import { CursorRangeError, NotFoundError, NotMemberError } from "../../../lib/errors.js";
import { receiptView, requireMember, requireMembership, type StoreDeps } from "../views.js";

/** Delivered/read cursors and "read by N of M". */
export const receiptRoutes = (
  deps: StoreDeps,
): Pick<ServiceImpl<typeof StoreService>, "applyReceipt" | "loadReadReceipts"> => ({
  async applyReceipt(req) {
    const { conversation, member } = await requireMembership(deps, req.userId, req.conversationId);
    const top = req.deliveredSeq > req.readSeq ? req.deliveredSeq : req.readSeq;
    // A former member's devices may still acknowledge what sync serves them,
    // up to the removal, so they stop being sent it.
    if (member.leftSeq !== undefined && top > member.leftSeq) {
      throw new NotMemberError(req.conversationId, req.userId);
    }
    if (top > conversation.headSeq) {
      throw new CursorRangeError("seq is beyond the conversation's head");
    }
    const { member: updated, changed } = await deps.metadata.advanceReceipt(
      req.userId,
      req.deviceId,
      req.conversationId,
      req.deliveredSeq,
      req.readSeq,
    );
    return { receipt: receiptView(updated), changed };
  },

  async loadReadReceipts(req) {
    const { conversation, member } = await requireMember(
      deps,
      req.viewerUserId,
      req.conversationId,
    );
    if (req.seq < 1n || req.seq > conversation.headSeq) {
      throw new CursorRangeError("seq is outside the conversation");
    }
    // What came before the viewer joined is hidden from it, as in history and reactions.
    if (req.seq < member.joinedSeq) throw new NotFoundError("event not found");
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
