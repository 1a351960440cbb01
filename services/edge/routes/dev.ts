import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { DevService } from "../../../gen/chat/v1/dev_service_pb.js";
import { checkExternalId } from "../../../lib/validate.js";
import type { EdgeContext } from "../context.js";

/**
 * DEV MODE ONLY: tokens for any user name, no credentials. Mounted only
 * when config.devMode is true, and its tokens carry a `dev` claim that is
 * rejected outside dev mode.
 */
export const devRoutes = (ctx: EdgeContext): ServiceImpl<typeof DevService> => ({
  async issueDevToken(req) {
    const userId = checkExternalId("user_name", req.userName);
    const deviceId = checkExternalId("device_id", req.deviceId || `${userId}-dev`);
    await ctx.store.putUser({ userId, displayName: userId, createOnly: true });
    await ctx.store.ensureDevice({ userId, deviceId });
    ctx.devices.evict(deviceId);
    const minted = await ctx.tokens.mint({
      userId,
      deviceId,
      ttlSeconds: ctx.config.auth.tokenTtlSeconds,
      dev: true,
    });
    return {
      token: minted.token,
      userId,
      deviceId,
      expiresAt: timestampFromMs(minted.expiresAtMs),
    };
  },
});
