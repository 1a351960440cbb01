import { afterEach, describe, expect, it } from "vitest";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import { direct, login, openSession, settle, type User } from "../helpers/clients.js";
import { type FcmAnswer, startFcmStandIn } from "../helpers/fcm-stand-in.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
let fcm: Awaited<ReturnType<typeof startFcmStandIn>> | undefined;
afterEach(async () => {
  await server?.destroy();
  await fcm?.close();
  server = undefined;
  fcm = undefined;
});

/** A server pushing through firebase-admin to the stand-in, which answers as `answer` says. */
async function start(answer: (token: string, attempt: number) => FcmAnswer = () => "ok") {
  fcm = await startFcmStandIn(answer);
  server = await startServer({ push: { fcmCredentialsFile: fcm.credentialsFile } }, undefined, {
    fcmAgent: fcm.agent,
  });
  return fcm;
}

const hasToken = async (user: User, deviceId: string) =>
  (await user.chat.listDevices({})).devices.find((d) => d.deviceId === deviceId)?.hasPushToken;

describe("push through FCM (firebase-admin against a local stand-in of its HTTP API)", () => {
  it("sends each offline device with a token a data message pointing at the event, authorized by the service account", async () => {
    const fcm = await start();
    const ann = await login(server!, "ann", "ann-phone");
    const benPhone = await login(server!, "ben", "ben-phone");
    const benIphone = await login(server!, "ben", "ben-iphone");
    const benLaptop = await login(server!, "ben", "ben-laptop");
    await ann.chat.registerDevice({ platform: DevicePlatform.IOS, pushToken: "tok-ann" });
    await benPhone.chat.registerDevice({
      platform: DevicePlatform.ANDROID,
      pushToken: "tok-phone",
    });
    await benIphone.chat.registerDevice({ platform: DevicePlatform.IOS, pushToken: "tok-iphone" });
    await benLaptop.chat.registerDevice({
      platform: DevicePlatform.DESKTOP,
      pushToken: "tok-laptop",
    });
    const id = await direct(ann, benPhone);
    // The laptop is online: it gets the event on its stream, not a push.
    const live = openSession(benLaptop.chat);
    await live.frames.synced();

    const sent = await ann.chat.send({
      conversationId: id,
      clientMsgId: "f1",
      content: { text: "secret plans" },
    });
    await fcm.until(() => fcm.sent.length === 2);
    await settle(200);
    expect(fcm.sent.map((m) => m.token).sort()).toEqual(["tok-iphone", "tok-phone"]);
    for (const m of fcm.sent) {
      expect(m.data).toEqual({
        conversation_id: id,
        seq: sent.event!.seq.toString(),
        event_id: sent.event!.eventId,
        sender_user_id: "ann",
      });
      expect(JSON.stringify(m)).not.toContain("secret plans");
      expect(m.android?.priority).toBe("high");
      expect(m.apns?.payload?.aps).toEqual({ "content-available": 1 });
      expect(m.apns?.headers).toMatchObject({ "apns-push-type": "background" });
      expect(m.webpush?.headers).toEqual({ Urgency: "high" });
    }
    // One JWT grant, signed with the key file's private key, bought the access token every send used.
    expect(fcm.grants).toHaveLength(1);
    expect(fcm.grants[0]!.iss).toMatch(/@relaychat-test\.iam\.gserviceaccount\.com$/);
    expect(fcm.grants[0]!.scope).toContain("https://www.googleapis.com/auth/firebase.messaging");
    expect(fcm.unauthorized).toBe(0);
    expect(fcm.attempts.has("tok-laptop")).toBe(false);
    expect(fcm.attempts.has("tok-ann")).toBe(false);
    live.abort();
  });

  it("clears a token FCM calls unregistered and stops sending to it, and keeps the other devices' tokens", async () => {
    const fcm = await start((token) => (token === "tok-gone" ? "UNREGISTERED" : "ok"));
    const ann = await login(server!, "ann");
    const old = await login(server!, "ben", "ben-old");
    const fresh = await login(server!, "ben", "ben-new");
    await old.chat.registerDevice({ platform: DevicePlatform.ANDROID, pushToken: "tok-gone" });
    await fresh.chat.registerDevice({ platform: DevicePlatform.ANDROID, pushToken: "tok-new" });
    const id = await direct(ann, old);

    await ann.chat.send({ conversationId: id, clientMsgId: "f1", content: { text: "one" } });
    await fcm.until(() => fcm.sent.length === 1 && fcm.attempts.get("tok-gone") === 1);
    await expect.poll(() => hasToken(fresh, "ben-old")).toBe(false);
    expect(await hasToken(fresh, "ben-new")).toBe(true);

    await ann.chat.send({ conversationId: id, clientMsgId: "f2", content: { text: "two" } });
    await fcm.until(() => fcm.sent.length === 2);
    await settle(200);
    expect(fcm.sent.map((m) => m.token)).toEqual(["tok-new", "tok-new"]);
    expect(fcm.attempts.get("tok-gone")).toBe(1);
  });

  it("retries FCM's transient failures per device, without holding up the send or resending what was accepted", async () => {
    const script: FcmAnswer[] = ["INTERNAL", "QUOTA_EXCEEDED", "ok"];
    const fcm = await start((token, attempt) =>
      token === "tok-busy" ? script[attempt - 1]! : "ok",
    );
    const ann = await login(server!, "ann");
    const phone = await login(server!, "ben", "ben-phone");
    const tablet = await login(server!, "ben", "ben-tablet");
    await phone.chat.registerDevice({ platform: DevicePlatform.ANDROID, pushToken: "tok-busy" });
    await tablet.chat.registerDevice({ platform: DevicePlatform.ANDROID, pushToken: "tok-calm" });
    const id = await direct(ann, phone);

    const acked = await ann.chat.send({
      conversationId: id,
      clientMsgId: "f1",
      content: { text: "hi" },
    });
    expect(acked.event?.seq).toBeGreaterThan(0n);
    await fcm.until(() => fcm.sent.length === 2);
    await settle(300);
    expect(fcm.attempts.get("tok-busy")).toBe(3);
    expect(fcm.attempts.get("tok-calm")).toBe(1);
    expect(fcm.sent.map((m) => m.token)).toEqual(["tok-calm", "tok-busy"]);
    expect(await hasToken(phone, "ben-phone")).toBe(true);
  });
});
