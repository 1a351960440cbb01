import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { ChatService } from "../../../gen/chat/v1/chat_service_pb.js";
import { caller } from "../auth.js";
import type { EdgeContext } from "../context.js";
import { abortReason, runDuplex } from "../duplex.js";
import { checkCursors } from "../validate.js";
import { answersInBinary } from "../wire.js";

/** Streams, heartbeats, typing and presence. */
export const sessionRoutes = (
  ctx: EdgeContext,
): Pick<
  ServiceImpl<typeof ChatService>,
  | "session"
  | "subscribe"
  | "heartbeat"
  | "setTyping"
  | "watchPresence"
  | "unwatchPresence"
  | "getPresence"
> => ({
  async *session(requests, hctx) {
    const binary = answersInBinary(hctx.requestHeader.get("content-type"));
    for await (const frame of runDuplex(ctx, caller(hctx), requests, hctx.signal, binary)) {
      yield { frame };
    }
  },

  async *subscribe(req, hctx) {
    checkCursors(req.cursors);
    const binary = answersInBinary(hctx.requestHeader.get("content-type"));
    const s = await ctx.sessions.open(caller(hctx), "subscribe", binary);
    const stop = () => s.close(abortReason(hctx.signal));
    hctx.signal.addEventListener("abort", stop);
    void s.subscribe(req.cursors);
    try {
      for await (const frame of s.frames()) yield { frame };
    } finally {
      hctx.signal.removeEventListener("abort", stop);
      await ctx.sessions.release(s);
    }
  },

  async heartbeat(_req, hctx) {
    await ctx.actions.heartbeat(caller(hctx));
    return { serverTime: timestampNow() };
  },

  async setTyping(req, hctx) {
    await ctx.actions.setTyping(caller(hctx), req);
    return {};
  },

  async watchPresence(req, hctx) {
    return { presences: await ctx.actions.watchPresence(caller(hctx), req.userIds) };
  },

  async unwatchPresence(req, hctx) {
    await ctx.actions.unwatchPresence(caller(hctx), req.userIds);
    return {};
  },

  async getPresence(req, hctx) {
    return { presences: await ctx.presence.get(caller(hctx), req.userIds) };
  },
});
