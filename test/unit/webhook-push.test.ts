import http from "node:http";
import type { AddressInfo } from "node:net";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { PushTargetSchema } from "../../gen/chat/internal/v1/store_service_pb.js";
import { EventSchema } from "../../gen/chat/v1/event_pb.js";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { PushNotifier } from "../../lib/backends/push.js";
import {
  createWebhookPush,
  type PushDropReason,
  type PushNotification,
  type WebhookPushOptions,
} from "../../lib/backends/webhook-push.js";
import { createWaiters } from "../helpers/waiters.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const secret = "push-gateway-secret-0123";
const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));

/**
 * A push gateway on loopback. `answer` gives each request's status, or
 * undefined to leave it hanging until `release()` (an overloaded gateway).
 */
async function startGateway(answer: () => number | undefined = () => 200) {
  const requests: { devices: number; aborted: boolean }[] = [];
  const hanging = new Set<http.ServerResponse>();
  const { poke: changed, until } = createWaiters();
  let released = false;
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => {
      raw += c;
    });
    req.on("end", () => {
      const r = { devices: (JSON.parse(raw) as PushNotification).devices.length, aborted: false };
      requests.push(r);
      res.on("close", () => {
        hanging.delete(res);
        if (!res.writableFinished) r.aborted = true;
        changed();
      });
      const status = released ? 200 : answer();
      if (status === undefined) hanging.add(res);
      else res.writeHead(status).end();
      changed();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/notify`,
    requests,
    /** Answers what hangs, and every later request, with 200. */
    release() {
      released = true;
      for (const res of hanging) res.writeHead(200).end();
    },
    until: (pred: () => boolean, timeoutMs = 5000) => until(pred, timeoutMs, "the gateway"),
    close() {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * A store whose lookups return one Android device per user, as fresh objects
 * like rows read from the store, after `hold` (a tick by default).
 */
function fakeStore(hold: () => Promise<void> = () => new Promise((r) => setImmediate(r))) {
  const stats = { lookups: 0, inFlight: 0, maxInFlight: 0 };
  let started: () => void = () => {};
  const firstLookup = new Promise<void>((r) => {
    started = r;
  });
  const client = {
    async loadPushTargets({ userIds }: { userIds: string[] }) {
      stats.lookups++;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      started();
      await hold();
      stats.inFlight--;
      return {
        targets: userIds.map((u, i) =>
          create(PushTargetSchema, {
            userId: u,
            deviceId: `${u}-installation-id`.split("").join(""),
            platform: DevicePlatform.ANDROID,
            // FCM-sized token.
            pushToken: `${"f".repeat(150)}${i}`.split("").join(""),
          }),
        ),
      };
    },
  };
  return { stats, firstLookup, client: client as unknown as WebhookPushOptions["store"] };
}

function captureLog() {
  const lines: { level: number; msg: string; dropped?: number }[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { log, warnings: () => lines.filter((l) => l.level === 40), lines };
}

const users = (n: number) => Array.from({ length: n }, (_, i) => `user-${i}`);
const event = (seq: number) =>
  create(EventSchema, {
    conversationId: "c_group",
    seq: BigInt(seq),
    eventId: `e_${seq}`,
    actorUserId: "sender",
  });

let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
let push: PushNotifier | undefined;
afterEach(async () => {
  await push?.close();
  await gateway?.close();
  push = undefined;
  gateway = undefined;
});

describe("webhook push bounds", () => {
  it("with a hung gateway, lookups and posts stay within the slots and sends past the held budget are dropped", async () => {
    gateway = await startGateway(() => undefined);
    const store = fakeStore();
    const { log, warnings } = captureLog();
    const drops: PushDropReason[] = [];
    push = createWebhookPush({
      url: gateway.url,
      secret,
      store: store.client,
      log,
      concurrency: 2,
      maxHeld: 5000,
      onDrop: (r) => drops.push(r),
    });
    for (let i = 1; i <= 20; i++) await push.notify(event(i), users(1000), new Set());

    // 5 groups of 1000 fit the budget (2 posting, 3 waiting); the other 15 are dropped.
    expect(drops).toEqual(Array(15).fill("full"));
    // One line for the episode, not one per dropped send.
    expect(warnings()).toHaveLength(1);
    await gateway.until(() => gateway!.requests.length === 2);
    expect(gateway.requests.map((r) => r.devices)).toEqual([1000, 1000]);
    // Waiting notifications have not been looked up: only the two slots did.
    expect(store.stats.maxInFlight).toBe(2);
    expect(store.stats.lookups).toBe(2);

    // Another send is still dropped while the budget is spent.
    await push.notify(event(21), users(1000), new Set());
    expect(drops).toHaveLength(16);
  });

  it("frees the budget as posts finish: once a hung gateway answers, every admitted and later send is pushed", async () => {
    gateway = await startGateway(() => undefined);
    const { log, lines } = captureLog();
    const drops: PushDropReason[] = [];
    push = createWebhookPush({
      url: gateway.url,
      secret,
      store: fakeStore().client,
      log,
      concurrency: 2,
      maxHeld: 3000,
      onDrop: (r) => drops.push(r),
    });
    for (let i = 1; i <= 5; i++) await push.notify(event(i), users(1000), new Set());
    expect(drops).toHaveLength(2);
    await gateway.until(() => gateway!.requests.length === 2);

    gateway.release();
    await gateway.until(() => gateway!.requests.length === 3);
    // Let the last answer reach the notifier; then nothing is held and a send using the whole budget fits.
    await settle(100);
    await push.notify(event(6), users(3000), new Set());
    await gateway.until(() => gateway!.requests.length === 4);
    expect(gateway.requests.map((r) => r.devices)).toEqual([1000, 1000, 1000, 3000]);
    expect(drops).toHaveLength(2);
    expect(lines.find((l) => l.msg === "push backlog has room again")?.dropped).toBe(2);
  });

  it("drops a notification larger than the whole budget and still pushes the others", async () => {
    gateway = await startGateway();
    const drops: PushDropReason[] = [];
    push = createWebhookPush({
      url: gateway.url,
      secret,
      store: fakeStore().client,
      log: captureLog().log,
      maxHeld: 100,
      onDrop: (r) => drops.push(r),
    });
    await push.notify(event(1), users(101), new Set());
    await push.notify(event(2), users(100), new Set());
    await gateway.until(() => gateway!.requests.length === 1);
    expect(drops).toEqual(["oversized"]);
    expect(gateway.requests[0]!.devices).toBe(100);
  });

  it("keeps nothing of a notification once it is done, however many went through", async () => {
    const store = fakeStore(() => Promise.resolve());
    push = createWebhookPush({
      url: "http://127.0.0.1:9/unused",
      secret,
      store: store.client,
      log: captureLog().log,
    });
    // Every device is connected: each notification is looked up, and nothing is posted.
    const connected = new Set(users(20).map((u) => `${u}-installation-id`));
    let sent = 0;
    const send = async (n: number) => {
      for (let batch = 0; batch < n; batch += 500) {
        for (let i = 0; i < 500; i++) await push!.notify(event(++sent), users(20), connected);
        await vi.waitFor(() => {
          if (store.stats.lookups !== sent || store.stats.inFlight !== 0) throw new Error("busy");
        });
      }
    };
    await send(1000);
    gc();
    const before = process.memoryUsage().heapUsed;
    await send(20_000);
    gc();
    // Holding each lookup's answer would be about 150 MiB here.
    expect((process.memoryUsage().heapUsed - before) / 2 ** 20).toBeLessThan(16);
  });

  it("holds tens of MiB at most with default settings, however many large-group sends meet a hung gateway", async () => {
    gateway = await startGateway(() => undefined);
    const store = fakeStore();
    push = createWebhookPush({
      url: gateway.url,
      secret,
      store: store.client,
      log: captureLog().log,
    });
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 1; i <= 2000; i++) await push.notify(event(i), users(1000), new Set());
    await gateway.until(() => gateway!.requests.length === 16);
    gc();
    const grownMiB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
    // Holding every send's devices would be ~650 MiB (~330 bytes a device).
    expect(grownMiB).toBeLessThan(64);
    expect(store.stats.maxInFlight).toBeLessThanOrEqual(16);
  });
});

describe("webhook push close", () => {
  it("aborts posts to a hung gateway and posts nothing of what was queued", async () => {
    gateway = await startGateway(() => undefined);
    const store = fakeStore();
    const p = createWebhookPush({
      url: gateway.url,
      secret,
      store: store.client,
      log: captureLog().log,
      concurrency: 1,
    });
    push = p;
    for (let i = 1; i <= 3; i++) await p.notify(event(i), users(10), new Set());
    await gateway.until(() => gateway!.requests.length === 1);
    await p.close();
    await gateway.until(() => gateway!.requests[0]!.aborted);
    await p.notify(event(4), users(10), new Set());
    await settle();
    expect(gateway.requests).toHaveLength(1);
    expect(store.stats.lookups).toBe(1);
  });

  it("a target lookup in flight at close() posts nothing and does not hold up close()", async () => {
    gateway = await startGateway();
    let release: () => void = () => {};
    const store = fakeStore(
      () =>
        new Promise<void>((r) => {
          release = r;
        }),
    );
    const p = createWebhookPush({
      url: gateway.url,
      secret,
      store: store.client,
      log: captureLog().log,
    });
    push = p;
    await p.notify(event(1), ["ben"], new Set());
    await store.firstLookup;
    await p.close();
    release();
    await settle();
    expect(store.stats.inFlight).toBe(0);
    expect(gateway.requests).toHaveLength(0);
  });

  it("close() during a retry wait makes no further attempt and does not wait out the backoff", async () => {
    gateway = await startGateway(() => 503);
    const p = createWebhookPush({
      url: gateway.url,
      secret,
      store: fakeStore().client,
      log: captureLog().log,
      retryDelayMs: 60_000,
    });
    push = p;
    await p.notify(event(1), ["ben"], new Set());
    await gateway.until(() => gateway!.requests.length === 1);
    // Let the 503 reach the notifier, which then waits a minute to retry.
    await settle(100);
    await p.close();
    await settle();
    expect(gateway.requests).toHaveLength(1);
  });
});
