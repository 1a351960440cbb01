import { create } from "@bufbuild/protobuf";
import type { Actor } from "../../gen/chat/internal/v1/router_service_pb.js";
import { ServerFrameSchema } from "../../gen/chat/v1/chat_service_pb.js";
import type { RateLimiter } from "../../lib/backends/soft-state.js";
import { fail } from "../../lib/errors.js";
import type { ConversationCache } from "./conversation-cache.js";
import type { Fanout } from "./fanout.js";

/**
 * Typing indicators: relayed to the other members, never stored, rate
 * limited per user, and expired by the server after ttlMs unless refreshed
 * (receivers then get typing=false).
 */
export function createTyping(deps: {
  cache: ConversationCache;
  fanout: Fanout;
  limiter: RateLimiter;
  ttlMs: number;
  perSecond: number;
  burst: number;
}) {
  const active = new Map<string, NodeJS.Timeout>();

  const send = (conversationId: string, userId: string, typing: boolean, others: string[]) =>
    deps.fanout.deliver(
      create(ServerFrameSchema, {
        frame: {
          case: "typing",
          value: { conversationId, userId, typing, ttlMs: typing ? deps.ttlMs : 0 },
        },
      }),
      others,
    );

  return {
    async signal(actor: Actor, conversationId: string, typing: boolean) {
      const state = await deps.cache.get(conversationId);
      if (!state) throw fail.notFound("conversation not found");
      if (!state.members.has(actor.userId)) throw fail.denied("not a member of this conversation");
      // Stopping is never limited: a refused stop would leave others seeing "typing" until it expires.
      if (
        typing &&
        !(await deps.limiter.take(`typing:${actor.userId}`, deps.perSecond, deps.burst))
      ) {
        throw fail.exhausted("typing rate limit exceeded");
      }
      const key = `${conversationId}\u0000${actor.userId}`;
      const others = () => deps.cache.memberIds(state).filter((u) => u !== actor.userId);
      const timer = active.get(key);
      if (timer) clearTimeout(timer);
      if (!typing) {
        if (!timer) return;
        active.delete(key);
        await send(conversationId, actor.userId, false, others());
        return;
      }
      const expire = setTimeout(() => {
        active.delete(key);
        void send(conversationId, actor.userId, false, others()).catch(() => undefined);
      }, deps.ttlMs);
      expire.unref();
      active.set(key, expire);
      await send(conversationId, actor.userId, true, others());
    },
    stop() {
      for (const t of active.values()) clearTimeout(t);
      active.clear();
    },
  };
}
