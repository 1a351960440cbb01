import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  PushTargetSchema,
  type StoreService,
} from "../../../gen/chat/internal/v1/store_service_pb.js";
import { DeviceSchema, UserSchema } from "../../../gen/chat/v1/model_pb.js";
import type { DeviceRecord, UserRecord } from "../../../lib/backends/metadata-store.js";
import type { StoreDeps } from "../views.js";

export const userView = (u: UserRecord) =>
  create(UserSchema, {
    userId: u.userId,
    displayName: u.displayName,
    createdAt: timestampFromMs(u.createdAtMs),
    updatedAt: timestampFromMs(u.updatedAtMs),
  });

export const deviceView = (d: DeviceRecord) =>
  create(DeviceSchema, {
    deviceId: d.deviceId,
    userId: d.userId,
    platform: d.platform,
    displayName: d.displayName,
    hasPushToken: d.pushToken !== "",
    createdAt: timestampFromMs(d.createdAtMs),
    lastActiveAt: timestampFromMs(d.lastActiveAtMs),
    ...(d.revokedAtMs ? { revokedAt: timestampFromMs(d.revokedAtMs) } : {}),
  });

/** Users and devices. */
export const accountRoutes = (
  deps: StoreDeps,
): Pick<
  ServiceImpl<typeof StoreService>,
  | "putUser"
  | "loadUsers"
  | "ensureDevice"
  | "updateDevice"
  | "loadDevice"
  | "loadDevices"
  | "revokeDevice"
  | "loadPushTargets"
  | "forgetPushToken"
> => ({
  async putUser(req) {
    const { user, created } = await deps.metadata.putUser(
      req.userId,
      req.displayName,
      req.createOnly,
    );
    return { user: userView(user), created };
  },
  async loadUsers(req) {
    return { users: (await deps.metadata.getUsers(req.userIds)).map(userView) };
  },
  async ensureDevice(req) {
    return {
      device: deviceView(await deps.metadata.ensureDevice(req.userId, req.deviceId, req.platform)),
    };
  },
  async updateDevice(req) {
    const d = await deps.metadata.updateDevice(req.userId, req.deviceId, {
      platform: req.platform,
      displayName: req.displayName,
      pushToken: req.pushToken,
    });
    return { device: deviceView(d) };
  },
  async loadDevice(req) {
    const d = await deps.metadata.getDevice(req.deviceId);
    return d ? { device: deviceView(d) } : {};
  },
  async loadDevices(req) {
    return { devices: (await deps.metadata.listDevices(req.userId)).map(deviceView) };
  },
  async revokeDevice(req) {
    return { device: deviceView(await deps.metadata.revokeDevice(req.userId, req.deviceId)) };
  },
  async loadPushTargets(req) {
    const targets = await deps.metadata.pushTargets(req.userIds);
    return {
      targets: targets.map((d) =>
        create(PushTargetSchema, {
          userId: d.userId,
          deviceId: d.deviceId,
          platform: d.platform,
          pushToken: d.pushToken,
        }),
      ),
    };
  },
  async forgetPushToken(req) {
    return { forgotten: await deps.metadata.forgetPushToken(req.deviceId, req.pushToken) };
  },
});
