import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { DevicePlatform } from "../../../gen/chat/v1/model_pb.js";
import type { PartnerService } from "../../../gen/chat/v1/partner_service_pb.js";
import { fail } from "../../../lib/errors.js";
import {
  checkClientKey,
  checkConversationId,
  checkExternalId,
  checkName,
} from "../../../lib/validate.js";
import type { EdgeContext } from "../context.js";
import { checkContent } from "../validate.js";
import { openConversation } from "./conversations.js";

/** The server-to-server API; the auth interceptor has checked the partner credentials. */
export const partnerRoutes = (ctx: EdgeContext): ServiceImpl<typeof PartnerService> => {
  const { auth, limits } = ctx.config;
  const requireUser = async (userId: string) => {
    const { users } = await ctx.store.loadUsers({ userIds: [userId] });
    if (users.length === 0) throw fail.notFound(`unknown user: ${userId}`);
    return users[0]!;
  };
  return {
    async upsertUser(req) {
      checkExternalId("user_id", req.userId);
      const displayName = checkName("display_name", req.displayName, 128);
      const res = await ctx.store.putUser({ userId: req.userId, displayName, createOnly: false });
      return { ...(res.user ? { user: res.user } : {}), created: res.created };
    },

    async getUser(req) {
      checkExternalId("user_id", req.userId);
      return { user: await requireUser(req.userId) };
    },

    async mintToken(req) {
      checkExternalId("user_id", req.userId);
      checkExternalId("device_id", req.deviceId);
      if (req.ttlSeconds > auth.maxTokenTtlSeconds) {
        throw fail.invalid(`ttl_seconds must be at most ${auth.maxTokenTtlSeconds}`);
      }
      if (!(req.platform in DevicePlatform)) throw fail.invalid("platform is unknown");
      await requireUser(req.userId);
      await ctx.store.ensureDevice({
        userId: req.userId,
        deviceId: req.deviceId,
        platform: req.platform,
      });
      ctx.devices.evict(req.deviceId);
      const minted = await ctx.tokens.mint({
        userId: req.userId,
        deviceId: req.deviceId,
        ttlSeconds: req.ttlSeconds || auth.tokenTtlSeconds,
      });
      return {
        token: minted.token,
        expiresAt: timestampFromMs(minted.expiresAtMs),
        keyId: minted.kid,
      };
    },

    async createConversation(req) {
      checkExternalId("acting_user_id", req.actingUserId);
      return openConversation(
        ctx,
        { userId: req.actingUserId, partner: true },
        req.actingUserId,
        req.kind,
        req.title,
        req.memberUserIds,
        req.clientRequestId,
      );
    },

    async sendSystemMessage(req) {
      checkConversationId(req.conversationId);
      if (req.senderUserId) checkExternalId("sender_user_id", req.senderUserId);
      checkClientKey("client_msg_id", req.clientMsgId, true);
      checkContent(req.content, limits);
      const res = await ctx.router.apply({
        actor: { userId: req.senderUserId, partner: true },
        proposal: {
          conversationId: req.conversationId,
          clientMsgId: req.clientMsgId,
          kind: { case: "messagePosted", value: { content: req.content } },
        },
      });
      return {
        result: { duplicate: res.duplicate, ...(res.event ? { event: res.event } : {}) },
      };
    },
  };
};
