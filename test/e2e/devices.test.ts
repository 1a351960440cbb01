import { toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { DevService } from "../../gen/chat/v1/dev_service_pb.js";
import { type Device, DevicePlatform, DeviceSchema } from "../../gen/chat/v1/model_pb.js";
import {
  direct,
  login,
  type OpenStream,
  openSession,
  openSubscribe,
  partnerClient,
  settle,
  transport,
  userFromToken,
} from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

const ready = (s: OpenStream) =>
  s.frames.until((f) => f.of("ready").length > 0 || f.ended, 5000, "ready or end");

/** A WebSocket session; resolves its close code once the server closes it. */
async function openWebSocket(server: TestServer, token: string) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/ws?access_token=${token}`);
  const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
  // The first message is the `ready` frame.
  await new Promise<void>((resolve, reject) => {
    ws.once("message", () => resolve());
    ws.once("error", reject);
  });
  return { ws, closed };
}

/** True when the device's encoding (unknown fields included) carries the text. */
const carries = (d: Device, text: string) =>
  Buffer.from(toBinary(DeviceSchema, d)).includes(Buffer.from(text));

describe("device registration", () => {
  it("sets platform, name and push token without ever returning the token", async () => {
    server = await startServer();
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-laptop");
    const b = await login(server, "ben", "ben-phone");
    const secret = "push-token-0123456789";

    const reg = await a1.chat.registerDevice({
      platform: DevicePlatform.IOS,
      displayName: "Ann's phone",
      pushToken: secret,
    });
    expect(reg.device).toMatchObject({
      deviceId: "ann-phone",
      userId: a1.userId,
      platform: DevicePlatform.IOS,
      displayName: "Ann's phone",
      hasPushToken: true,
    });
    expect(carries(reg.device!, secret)).toBe(false);

    const listed = await a2.chat.listDevices({});
    expect(listed.devices.map((d) => d.deviceId).sort()).toEqual(["ann-laptop", "ann-phone"]);
    expect(listed.devices.every((d) => d.userId === a1.userId)).toBe(true);
    const phone = listed.devices.find((d) => d.deviceId === "ann-phone")!;
    expect(phone).toMatchObject({ platform: DevicePlatform.IOS, hasPushToken: true });
    expect(listed.devices.find((d) => d.deviceId === "ann-laptop")!.hasPushToken).toBe(false);
    for (const d of listed.devices) expect(carries(d, secret)).toBe(false);
    expect((await b.chat.listDevices({})).devices.map((d) => d.deviceId)).toEqual(["ben-phone"]);

    const me = await a1.chat.getMe({});
    expect(me.user).toMatchObject({ userId: a1.userId, displayName: "ann" });
    expect(me.device).toMatchObject({
      deviceId: "ann-phone",
      userId: a1.userId,
      displayName: "Ann's phone",
      platform: DevicePlatform.IOS,
      hasPushToken: true,
    });
    expect(me.device!.revokedAt).toBeUndefined();
    expect(carries(me.device!, secret)).toBe(false);

    // An empty token clears it.
    const cleared = await a1.chat.registerDevice({
      platform: DevicePlatform.ANDROID,
      displayName: "",
      pushToken: "",
    });
    expect(cleared.device).toMatchObject({ platform: DevicePlatform.ANDROID, hasPushToken: false });

    await expect(
      a1.chat.registerDevice({ platform: 99 as DevicePlatform, displayName: "x", pushToken: "" }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(
      a1.chat.registerDevice({ platform: DevicePlatform.IOS, displayName: "x", pushToken: "a b" }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(
      a1.chat.registerDevice({
        platform: DevicePlatform.IOS,
        displayName: "x".repeat(129),
        pushToken: "",
      }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    for (const displayName of ["a\u0000b", "line\nbreak", "bell\u0007"]) {
      await expect(
        a1.chat.registerDevice({ platform: DevicePlatform.IOS, displayName, pushToken: "" }),
      ).rejects.toMatchObject({ code: Code.InvalidArgument });
    }
  });
});

describe("device revocation", () => {
  it("ends the device's streams, rejects its token at once and leaves other devices working", async () => {
    server = await startServer();
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-laptop");
    const b = await login(server, "ben", "ben-phone");
    const id = await direct(a1, b);

    const phoneSession = openSession(a1.chat);
    const phoneSubscribe = openSubscribe(a1.chat);
    const laptop = openSession(a2.chat);
    for (const s of [phoneSession, phoneSubscribe, laptop]) {
      await s.frames.synced();
    }
    const phoneSocket = await openWebSocket(server, a1.token);
    // A verified token is remembered for a while; revocation must not wait for that.
    await a1.chat.getMe({});

    const res = await a2.chat.revokeDevice({ deviceId: "ann-phone" });
    expect(res.device!.deviceId).toBe("ann-phone");
    expect(res.device!.revokedAt).toBeDefined();
    await expect(a1.chat.getMe({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    await expect(a1.via("connect").listDevices({})).rejects.toMatchObject({
      code: Code.Unauthenticated,
    });

    for (const s of [phoneSession, phoneSubscribe]) {
      await s.frames.untilEnded(5000);
      expect(s.frames.error?.code).toBe(Code.Unauthenticated);
    }
    // WebSocket sessions close with 4000 + the gRPC code.
    expect(await phoneSocket.closed).toBe(4000 + Code.Unauthenticated);
    const again = openSubscribe(a1.chat);
    await again.frames.untilEnded(5000);
    expect(again.frames.error?.code).toBe(Code.Unauthenticated);

    // The other device of the same user is untouched.
    await b.chat.send({ conversationId: id, clientMsgId: "after", content: { text: "hi" } });
    await laptop.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "after"));
    expect(laptop.frames.ended).toBe(false);
    expect((await a2.chat.getMe({})).device!.deviceId).toBe("ann-laptop");
    const devices = (await a2.chat.listDevices({})).devices;
    expect(devices.find((d) => d.deviceId === "ann-phone")!.revokedAt).toBeDefined();
    expect(devices.find((d) => d.deviceId === "ann-laptop")!.revokedAt).toBeUndefined();

    // Someone else's device, or one that does not exist, is not found.
    await expect(b.chat.revokeDevice({ deviceId: "ann-laptop" })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await expect(b.chat.revokeDevice({ deviceId: "nobody-device" })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await settle(200);
    expect(laptop.frames.ended).toBe(false);
    await a2.chat.getMe({});

    // Revocation is permanent: no new token for that device.
    const dev = createClient(DevService, transport(server.url, "grpc"));
    await expect(
      dev.issueDevToken({ userName: "ann", deviceId: "ann-phone" }),
    ).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await expect(
      partnerClient(server).mintToken({ userId: a1.userId, deviceId: "ann-phone" }),
    ).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await expect(a1.chat.getMe({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    laptop.abort();
  });
});

describe("token expiry", () => {
  it("ends open streams with UNAUTHENTICATED once the token expires, and rejects the token", async () => {
    server = await startServer({ auth: { tokenTtlSeconds: 2 } });
    const dev = createClient(DevService, transport(server.url, "grpc"));
    const issued = await dev.issueDevToken({ userName: "ann", deviceId: "ann-phone" });
    const a = userFromToken(server, issued.userId, issued.deviceId, issued.token);
    const expiresAtMs = timestampMs(issued.expiresAt!);
    // Expiry is in whole seconds, rounded up: between the TTL and one second more.
    expect(expiresAtMs - Date.now()).toBeLessThanOrEqual(3000);

    const session = openSession(a.chat);
    const sub = openSubscribe(a.chat);
    for (const s of [session, sub]) {
      await s.frames.synced();
    }
    await a.chat.getMe({});
    for (const s of [session, sub]) {
      await s.frames.untilEnded(5000);
      expect(s.frames.error?.code).toBe(Code.Unauthenticated);
    }
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAtMs);
    await expect(a.chat.getMe({})).rejects.toMatchObject({ code: Code.Unauthenticated });

    // A fresh token for the same device works.
    const fresh = await login(server, "ann", "ann-phone");
    expect((await fresh.chat.getMe({})).device!.deviceId).toBe("ann-phone");
  });
});

describe("stream caps", () => {
  it("limits streams per device and per user; the open ones keep working", async () => {
    server = await startServer({ limits: { streamsPerDevice: 2, streamsPerUser: 3 } });
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-laptop");
    const a3 = await login(server, "ann", "ann-web");
    const b = await login(server, "ben", "ben-phone");
    const id = await direct(a1, b);

    const first = openSession(a1.chat);
    const second = openSubscribe(a1.chat);
    for (const s of [first, second]) await s.frames.synced();
    const third = openSession(a1.chat);
    await third.frames.untilEnded(5000);
    expect(third.frames.error?.code).toBe(Code.ResourceExhausted);

    const laptop = openSession(a2.chat);
    await ready(laptop);
    expect(laptop.frames.ended).toBe(false);
    // ann-web has no stream yet, but ann has used up her three.
    const web = openSubscribe(a3.chat);
    await web.frames.untilEnded(5000);
    expect(web.frames.error?.code).toBe(Code.ResourceExhausted);
    // Other users are not affected.
    const ben = openSession(b.chat);
    await ready(ben);
    expect(ben.frames.ended).toBe(false);

    await b.chat.send({ conversationId: id, clientMsgId: "m1", content: { text: "hi" } });
    for (const s of [first, second, laptop]) {
      await s.frames.until((f) => f.events(id).some((e) => e.clientMsgId === "m1"));
      expect(s.frames.ended).toBe(false);
    }

    // Ending a stream frees its place.
    first.abort();
    await first.frames.untilEnded();
    let retry: OpenStream | undefined;
    for (let i = 0; i < 50; i++) {
      retry = openSubscribe(a3.chat);
      await ready(retry);
      if (!retry.frames.ended) break;
      expect(retry.frames.error?.code).toBe(Code.ResourceExhausted);
      await settle(100);
    }
    expect(retry!.frames.ended).toBe(false);
    expect(retry!.frames.of("ready")[0]!.deviceId).toBe("ann-web");

    for (const s of [second, laptop, ben, retry!]) s.abort();
  });
});
