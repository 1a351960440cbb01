import { createHmac } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { PushNotification } from "../../lib/backends/webhook-push.js";
import { direct, login, openSession, settle } from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { createWaiters } from "../helpers/waiters.js";

const secret = "push-gateway-secret-0123";

interface Received {
  body: PushNotification;
  raw: string;
  signature: string;
  timestamp: string;
}

/** A push gateway on loopback: records every POST, answering with `statuses` in turn, then 200. */
async function startGateway(statuses: number[] = []) {
  const received: Received[] = [];
  const attempts: number[] = [];
  const { poke, until } = createWaiters();
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => {
      raw += c;
    });
    req.on("end", () => {
      const status = statuses.shift() ?? 200;
      attempts.push(status);
      if (status === 200) {
        received.push({
          body: JSON.parse(raw) as PushNotification,
          raw,
          signature: String(req.headers["x-chat-signature"] ?? ""),
          timestamp: String(req.headers["x-chat-timestamp"] ?? ""),
        });
      }
      res.writeHead(status).end();
      poke();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/notify`,
    received,
    attempts,
    until: (pred: () => boolean, timeoutMs = 5000) => until(pred, timeoutMs, "the gateway"),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

let server: TestServer | undefined;
let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
afterEach(async () => {
  await server?.destroy();
  await gateway?.close();
  server = undefined;
  gateway = undefined;
});

describe("push for devices without a live session", () => {
  it("notifies only offline devices with a token, never the sender, signed and without the content", async () => {
    gateway = await startGateway();
    server = await startServer({ push: { webhookUrl: gateway.url, webhookSecret: secret } });
    const ann = await login(server, "ann", "ann-phone");
    const benPhone = await login(server, "ben", "ben-phone");
    const benLaptop = await login(server, "ben", "ben-laptop");
    const benTablet = await login(server, "ben", "ben-tablet");
    await ann.chat.registerDevice({ platform: DevicePlatform.IOS, pushToken: "tok-ann" });
    await benPhone.chat.registerDevice({
      platform: DevicePlatform.ANDROID,
      pushToken: "tok-phone",
    });
    await benLaptop.chat.registerDevice({
      platform: DevicePlatform.DESKTOP,
      pushToken: "tok-laptop",
    });
    // The tablet has no token: nothing to push to.
    const id = await direct(ann, benPhone);
    const live = openSession(benLaptop.chat);
    await live.frames.synced();

    const sent = await ann.chat.send({
      conversationId: id,
      clientMsgId: "p1",
      content: { text: "secret plans" },
    });
    await gateway.until(() => gateway!.received.length === 1);
    const [n] = gateway.received;
    expect(n!.body).toEqual({
      conversation_id: id,
      seq: sent.event!.seq.toString(),
      event_id: sent.event!.eventId,
      sender_user_id: "ann",
      devices: [
        { user_id: "ben", device_id: "ben-phone", platform: "android", push_token: "tok-phone" },
      ],
    });
    expect(n!.raw).not.toContain("secret plans");
    // The signature covers the timestamp, which says when it was sent: a replay is visible.
    expect(Math.abs(Number(n!.timestamp) - Date.now() / 1000)).toBeLessThan(30);
    const expected = createHmac("sha256", secret).update(`${n!.timestamp}.${n!.raw}`).digest("hex");
    expect(n!.signature).toBe(`sha256=${expected}`);
    expect(benTablet.deviceId).toBe("ben-tablet");

    // Reactions and other changes do not push.
    await benLaptop.chat.addReaction({
      conversationId: id,
      targetSeq: sent.event!.seq,
      emoji: "👍",
    });
    await settle(300);
    expect(gateway.received).toHaveLength(1);
    live.abort();
  });

  it("stops pushing to a revoked device", async () => {
    gateway = await startGateway();
    server = await startServer({ push: { webhookUrl: gateway.url, webhookSecret: secret } });
    const ann = await login(server, "ann");
    const old = await login(server, "ben", "ben-old");
    const fresh = await login(server, "ben", "ben-new");
    await old.chat.registerDevice({ platform: DevicePlatform.ANDROID, pushToken: "tok-old" });
    await fresh.chat.registerDevice({ platform: DevicePlatform.ANDROID, pushToken: "tok-new" });
    const id = await direct(ann, old);
    await fresh.chat.revokeDevice({ deviceId: "ben-old" });
    await ann.chat.send({ conversationId: id, clientMsgId: "p1", content: { text: "hi" } });
    await gateway.until(() => gateway!.received.length === 1);
    expect(gateway.received[0]!.body.devices.map((d) => d.device_id)).toEqual(["ben-new"]);
  });

  it("moves a push token to the user who registered it last: an install signed in as someone else gets none of the previous user's pushes", async () => {
    gateway = await startGateway();
    server = await startServer({ push: { webhookUrl: gateway.url, webhookSecret: secret } });
    const cat = await login(server, "cat");
    const ann = await login(server, "ann", "ann-install");
    await ann.chat.registerDevice({ platform: DevicePlatform.IOS, pushToken: "tok-install" });
    // Ann signs out; Ben signs in on the same install, which keeps its token.
    const ben = await login(server, "ben", "ben-install");
    await ben.chat.registerDevice({ platform: DevicePlatform.IOS, pushToken: "tok-install" });
    expect((await ann.chat.listDevices({})).devices[0]?.hasPushToken).toBe(false);
    const toAnn = await direct(cat, ann);
    const toBen = await direct(cat, ben);
    await cat.chat.send({ conversationId: toAnn, clientMsgId: "a1", content: { text: "for ann" } });
    await cat.chat.send({ conversationId: toBen, clientMsgId: "b1", content: { text: "for ben" } });
    await gateway.until(() => gateway!.received.length === 1);
    await settle(300);
    expect(gateway.received).toHaveLength(1);
    expect(gateway.received[0]!.body.conversation_id).toBe(toBen);
    expect(gateway.received[0]!.body.devices).toEqual([
      { user_id: "ben", device_id: "ben-install", platform: "ios", push_token: "tok-install" },
    ]);
  });

  it("retries a failing gateway without holding up the send, and loses no message when it is down", async () => {
    gateway = await startGateway([503, 503]);
    server = await startServer({ push: { webhookUrl: gateway.url, webhookSecret: secret } });
    const ann = await login(server, "ann");
    const ben = await login(server, "ben");
    await ben.chat.registerDevice({ platform: DevicePlatform.WEB, pushToken: "tok-web" });
    const id = await direct(ann, ben);
    const sent = await ann.chat.send({
      conversationId: id,
      clientMsgId: "p1",
      content: { text: "a" },
    });
    // The send was acknowledged before the gateway accepted anything.
    expect(gateway.received).toHaveLength(0);
    await gateway.until(() => gateway!.received.length === 1);
    expect(gateway.attempts).toEqual([503, 503, 200]);
    expect(gateway.received[0]!.body.event_id).toBe(sent.event!.eventId);

    // With the gateway gone, sends still succeed and are stored.
    await gateway.close();
    for (let i = 0; i < 3; i++) {
      await ann.chat.send({ conversationId: id, clientMsgId: `down${i}`, content: { text: "b" } });
    }
    const history = await ben.chat.getHistory({ conversationId: id });
    expect(history.events.filter((e) => e.clientMsgId.startsWith("down"))).toHaveLength(3);
  });
});
