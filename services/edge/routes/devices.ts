import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { EdgeMessageSchema } from "../../../gen/chat/internal/v1/edge_pb.js";
import type { ChatService } from "../../../gen/chat/v1/chat_service_pb.js";
import { DevicePlatform } from "../../../gen/chat/v1/model_pb.js";
import { fail } from "../../../lib/errors.js";
import { checkExternalId, utf8Length } from "../../../lib/validate.js";
import { caller } from "../auth.js";
import type { EdgeContext } from "../context.js";

/** The caller's devices. */
export const deviceRoutes = (
  ctx: EdgeContext,
): Pick<
  ServiceImpl<typeof ChatService>,
  "registerDevice" | "listDevices" | "revokeDevice" | "getMe"
> => ({
  async registerDevice(req, hctx) {
    const who = caller(hctx);
    if (!(req.platform in DevicePlatform)) throw fail.invalid("platform is unknown");
    if (
      utf8Length(req.displayName) > 128 ||
      !req.displayName.isWellFormed() ||
      /\p{Cc}/u.test(req.displayName)
    ) {
      throw fail.invalid(
        "display_name must be at most 128 bytes of UTF-8 without control characters",
      );
    }
    if (utf8Length(req.pushToken) > 4096 || /\s/.test(req.pushToken)) {
      throw fail.invalid("push_token must be at most 4096 bytes without spaces");
    }
    const { device } = await ctx.store.updateDevice({
      userId: who.userId,
      deviceId: who.deviceId,
      platform: req.platform,
      displayName: req.displayName,
      pushToken: req.pushToken,
    });
    return device ? { device } : {};
  },

  async listDevices(_req, hctx) {
    return { devices: (await ctx.store.loadDevices({ userId: caller(hctx).userId })).devices };
  },

  async revokeDevice(req, hctx) {
    const who = caller(hctx);
    checkExternalId("device_id", req.deviceId);
    const { device } = await ctx.store.revokeDevice({ userId: who.userId, deviceId: req.deviceId });
    ctx.devices.evict(req.deviceId);
    await ctx.soft.bus.broadcast(
      create(EdgeMessageSchema, {
        kind: { case: "deviceRevoked", value: { userId: who.userId, deviceId: req.deviceId } },
      }),
    );
    return device ? { device } : {};
  },

  async getMe(_req, hctx) {
    const who = caller(hctx);
    const [{ users }, { device }] = await Promise.all([
      ctx.store.loadUsers({ userIds: [who.userId] }),
      ctx.store.loadDevice({ deviceId: who.deviceId }),
    ]);
    const user = users[0];
    return { ...(user ? { user } : {}), ...(device ? { device } : {}) };
  },
});
