import type { Client } from "@connectrpc/connect";
import type { Actor, RouterService } from "../../gen/chat/internal/v1/router_service_pb.js";
import {
  type GetHistoryRequest,
  type GetHistoryResponse,
  HistoryDirection,
  type MarkDeliveredRequest,
  type MarkReadRequest,
  type SendRequest,
  type SendResponse,
  type SetTypingRequest,
  type SyncRequest,
  type SyncResponse,
} from "../../gen/chat/v1/chat_service_pb.js";
import { MessageKind, type MessagePosted } from "../../gen/chat/v1/event_pb.js";
import type { Receipt } from "../../gen/chat/v1/model_pb.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import type { Limits } from "../../lib/config.js";
import { fail } from "../../lib/errors.js";
import { checkConversationId } from "../../lib/validate.js";
import type { StoreClient } from "../router/store-client.js";
import type { Caller } from "./auth.js";
import type { PresenceService } from "./presence.js";
import type { Sessions } from "./sessions.js";
import { checkCursors, checkHistory, checkSend, checkSeq } from "./validate.js";
import { historyAnswer, storedSyncBatch } from "./wire.js";

export type RouterClient = Client<typeof RouterService>;

/** Most events one Sync response carries before it sets has_more. */
const syncMaxEvents = 5000;

/** The caller as the router's actor (a literal with every field: see "The send path"). */
export const actorOf = (who: Caller): Actor => ({
  $typeName: "chat.internal.v1.Actor",
  userId: who.userId,
  deviceId: who.deviceId,
  partner: false,
});

/**
 * The client actions that exist on more than one path: as Session frames and
 * unary calls, or as unary calls served by Connect's handler and by the
 * edge's direct HTTP/2 path. Every path calls these, so they validate, limit
 * and behave identically.
 */
export function createActions(deps: {
  router: RouterClient;
  store: StoreClient;
  soft: SoftState;
  limits: Limits;
  presence: PresenceService;
  sessions: Sessions;
}) {
  const { limits } = deps;
  /** Takes a token of the user's send budget, which every event the user makes spends. */
  const spend = async (who: Caller) => {
    if (
      !(await deps.soft.limiter.take(`send:${who.userId}`, limits.sendPerSecond, limits.sendBurst))
    ) {
      throw fail.exhausted("send rate limit exceeded, retry later");
    }
  };
  return {
    spend,
    async send(who: Caller, req: SendRequest): Promise<SendResponse> {
      checkSend(req, limits);
      await spend(who);
      // Literals, not create(): built for every send (see "The send path" in docs/ARCHITECTURE.md).
      const posted: MessagePosted = {
        $typeName: "chat.v1.MessagePosted",
        ...(req.content ? { content: req.content } : {}),
        messageKind: MessageKind.UNSPECIFIED,
      };
      const res = await deps.router.apply({
        $typeName: "chat.internal.v1.ApplyRequest",
        actor: actorOf(who),
        proposal: {
          $typeName: "chat.v1.Event",
          conversationId: req.conversationId,
          seq: 0n,
          eventId: "",
          actorUserId: "",
          actorDeviceId: "",
          clientMsgId: req.clientMsgId,
          redacted: false,
          kind: { case: "messagePosted", value: posted },
        },
      });
      return {
        $typeName: "chat.v1.SendResponse",
        ...(res.event ? { event: res.event } : {}),
        duplicate: res.duplicate,
      };
    },
    async markDelivered(who: Caller, req: MarkDeliveredRequest): Promise<Receipt | undefined> {
      checkConversationId(req.conversationId);
      checkSeq("seq", req.seq);
      const res = await deps.router.updateReceipt({
        actor: actorOf(who),
        conversationId: req.conversationId,
        deliveredSeq: req.seq,
      });
      return res.receipt;
    },
    async markRead(who: Caller, req: MarkReadRequest): Promise<Receipt | undefined> {
      checkConversationId(req.conversationId);
      checkSeq("seq", req.seq);
      const res = await deps.router.updateReceipt({
        actor: actorOf(who),
        conversationId: req.conversationId,
        readSeq: req.seq,
      });
      return res.receipt;
    },
    async setTyping(who: Caller, req: SetTypingRequest) {
      checkConversationId(req.conversationId);
      await deps.router.signalTyping({
        actor: actorOf(who),
        conversationId: req.conversationId,
        typing: req.typing,
      });
    },
    /**
     * A page of history. `binary`: the answer is written in binary protobuf,
     * so it may carry the events as the store holds them (see historyAnswer).
     */
    async getHistory(
      who: Caller,
      req: GetHistoryRequest,
      binary: boolean,
    ): Promise<GetHistoryResponse> {
      checkHistory(req);
      const res = await deps.store.readHistory({
        viewerUserId: who.userId,
        conversationId: req.conversationId,
        anchorSeq: req.anchorSeq,
        backward: req.direction !== HistoryDirection.FORWARD,
        limit: req.limit || 50,
        encoded: binary,
      });
      return historyAnswer(res, binary);
    },
    /** The device's catch-up as one answer; `binary` as for getHistory (see storedSyncBatch). */
    async sync(who: Caller, req: SyncRequest, binary: boolean): Promise<SyncResponse> {
      checkCursors(req.cursors);
      if (req.limitPerConversation > 1000) {
        throw fail.invalid("limit_per_conversation must be at most 1000");
      }
      const res = await deps.store.readSync({
        viewerUserId: who.userId,
        deviceId: who.deviceId,
        cursors: req.cursors,
        limitPerConversation: req.limitPerConversation,
        maxEvents: syncMaxEvents,
        encoded: binary,
      });
      // JSON answers read decoded batches (so would a store process that ignores `encoded`).
      const batches =
        res.encodedBatches.length > 0 ? res.encodedBatches.map(storedSyncBatch) : res.batches;
      return { $typeName: "chat.v1.SyncResponse", batches, hasMore: res.hasMore };
    },
    watchPresence: (who: Caller, userIds: string[]) => deps.presence.watch(who, userIds),
    unwatchPresence: (who: Caller, userIds: string[]) => deps.presence.unwatch(who, userIds),
    async heartbeat(who: Caller) {
      await Promise.all([
        deps.presence.heartbeat(who.userId, who.deviceId),
        deps.sessions.touch(who),
      ]);
    },
  };
}

export type Actions = ReturnType<typeof createActions>;
