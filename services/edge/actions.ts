import type { Client } from "@connectrpc/connect";
import type { Actor, RouterService } from "../../gen/chat/internal/v1/router_service_pb.js";
import type {
  MarkDeliveredRequest,
  MarkReadRequest,
  SendRequest,
  SendResponse,
  SetTypingRequest,
} from "../../gen/chat/v1/chat_service_pb.js";
import { MessageKind, type MessagePosted } from "../../gen/chat/v1/event_pb.js";
import type { Receipt } from "../../gen/chat/v1/model_pb.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import type { Limits } from "../../lib/config.js";
import { fail } from "../../lib/errors.js";
import { checkConversationId } from "../../lib/validate.js";
import type { Caller } from "./auth.js";
import type { PresenceService } from "./presence.js";
import type { Sessions } from "./sessions.js";
import { checkSend, checkSeq } from "./validate.js";

export type RouterClient = Client<typeof RouterService>;

/** The caller as the router's actor (a literal with every field: see "The send path"). */
export const actorOf = (who: Caller): Actor => ({
  $typeName: "chat.internal.v1.Actor",
  userId: who.userId,
  deviceId: who.deviceId,
  partner: false,
});

/**
 * The client actions that exist both as unary calls and as Session frames.
 * Both paths call these, so they validate, limit and behave identically.
 */
export function createActions(deps: {
  router: RouterClient;
  soft: SoftState;
  limits: Limits;
  presence: PresenceService;
  sessions: Sessions;
}) {
  const { limits } = deps;
  return {
    async send(who: Caller, req: SendRequest): Promise<SendResponse> {
      checkSend(req, limits);
      const allowed = await deps.soft.limiter.take(
        `send:${who.userId}`,
        limits.sendPerSecond,
        limits.sendBurst,
      );
      if (!allowed) throw fail.exhausted("send rate limit exceeded, retry later");
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
