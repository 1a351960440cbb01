import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  type Frames,
  group,
  login,
  type OpenSession,
  openSession,
  openSubscribe,
  settle,
  type User,
} from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

// Short but not tight: streams stay silent for at most 50 ms between heartbeats.
const heartbeatIntervalMs = 200;
const presenceTtlMs = 800;
const timing = { session: { heartbeatIntervalMs, presenceTtlMs } };

/** Sends heartbeat frames on a Session stream until the returned function is called. */
function keepAlive(s: OpenSession, everyMs = 50) {
  let n = 0;
  const timer = setInterval(() => {
    s.send({ frameId: `hb${n++}`, action: { case: "heartbeat", value: {} } });
  }, everyMs);
  return () => clearInterval(timer);
}

/** A Session stream kept alive by heartbeat frames; `close` stops them and aborts it. */
async function liveSession(u: User) {
  const s = openSession(u.chat, { subscribe: false });
  const stop = keepAlive(s);
  await s.frames.until((f) => f.of("ready").length > 0, 5000, "ready");
  return {
    ...s,
    close() {
      stop();
      s.abort();
    },
  };
}

const presenceOf = (f: Frames, userId: string) =>
  f.of("presence").filter((p) => p.userId === userId);

describe("presence state", () => {
  it("stays online while any device heartbeats and turns offline with last_seen_at after the TTL", async () => {
    server = await startServer(timing);
    const a1 = await login(server, "ann", "ann-phone");
    const a2 = await login(server, "ann", "ann-laptop");
    const b = await login(server, "ben");
    await group(b, [a1]);
    const ben = await liveSession(b);

    const initial = await b.chat.watchPresence({ userIds: [a1.userId] });
    expect(initial.presences).toHaveLength(1);
    expect(initial.presences[0]).toMatchObject({ userId: a1.userId, online: false });
    expect(initial.presences[0]!.lastSeenAt).toBeUndefined();

    const phone = await liveSession(a1);
    await ben.frames.until((f) => presenceOf(f, a1.userId).length === 1, 5000, "online");
    expect(presenceOf(ben.frames, a1.userId)[0]!.online).toBe(true);
    const laptop = await liveSession(a2);

    // One device going away is not enough while the other heartbeats.
    phone.close();
    await settle(presenceTtlMs + 400);
    expect(presenceOf(ben.frames, a1.userId)).toHaveLength(1);
    expect((await b.chat.getPresence({ userIds: [a1.userId] })).presences[0]!.online).toBe(true);

    const stoppedAt = Date.now();
    laptop.close();
    await ben.frames.until((f) => presenceOf(f, a1.userId).length === 2, 5000, "offline");
    const offlineAt = Date.now();
    const offline = presenceOf(ben.frames, a1.userId)[1]!;
    expect(offline.online).toBe(false);
    expect(offline.lastSeenAt).toBeDefined();
    const lastSeen = timestampMs(offline.lastSeenAt!);
    // The last heartbeat is around the stop (one may still have been in flight) ...
    expect(lastSeen).toBeGreaterThan(stoppedAt - 500);
    expect(lastSeen).toBeLessThan(stoppedAt + 300);
    // ... and the user turned offline only once the TTL had passed after it.
    expect(offlineAt - lastSeen).toBeGreaterThanOrEqual(presenceTtlMs - 100);

    const now = (await b.chat.getPresence({ userIds: [a1.userId] })).presences[0]!;
    expect(now.online).toBe(false);
    expect(timestampMs(now.lastSeenAt!)).toBe(lastSeen);

    // Any heartbeat brings the user back.
    await a2.chat.heartbeat({});
    await ben.frames.until((f) => presenceOf(f, a1.userId).length === 3, 5000, "online again");
    expect(presenceOf(ben.frames, a1.userId)[2]!.online).toBe(true);
    ben.close();
  });
});

describe("presence watching", () => {
  it("goes only to watching devices; watch returns the current state and unwatch stops updates", async () => {
    server = await startServer(timing);
    const [a, b, c, d] = await Promise.all(
      ["ann", "ben", "cat", "dan"].map((n) => login(server!, n)),
    );
    await group(a!, [b!, c!]);
    const ben = await liveSession(b!);
    const cat = await liveSession(c!);
    // Watches belong to a device: ben's second device does not watch.
    const benWeb = await liveSession(await login(server, "ben", "ben-web"));

    await b!.chat.watchPresence({ userIds: [a!.userId] });
    const ann = await liveSession(a!);
    await ben.frames.until((f) => presenceOf(f, a!.userId).length === 1, 5000, "ann online");
    expect(presenceOf(ben.frames, a!.userId)[0]!.online).toBe(true);

    await b!.chat.unwatchPresence({ userIds: [a!.userId] });
    const watched = await c!.chat.watchPresence({ userIds: [a!.userId] });
    expect(watched.presences).toEqual([
      expect.objectContaining({ userId: a!.userId, online: true }),
    ]);
    expect(cat.frames.of("presence")).toEqual([]);

    ann.close();
    await cat.frames.until((f) => presenceOf(f, a!.userId).length === 1, 5000, "ann offline");
    expect(presenceOf(cat.frames, a!.userId)[0]!.online).toBe(false);
    await settle(300);
    // ben stopped watching: nothing since the first frame.
    expect(ben.frames.of("presence")).toHaveLength(1);
    expect(benWeb.frames.of("presence")).toEqual([]);

    // dan shares no conversation with ann.
    await expect(d!.chat.watchPresence({ userIds: [a!.userId] })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    await expect(d!.chat.getPresence({ userIds: [a!.userId] })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    // One visible and one invisible user in a request is still a denial.
    await expect(c!.chat.watchPresence({ userIds: [a!.userId, d!.userId] })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    // Oneself is always visible.
    const self = await d!.chat.getPresence({ userIds: [d!.userId] });
    expect(self.presences[0]!.userId).toBe(d!.userId);
    ben.close();
    benWeb.close();
    cat.close();
  });

  it("stops updates to a watcher who no longer shares a conversation", async () => {
    server = await startServer(timing);
    const [a, b, c] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server!, n)));
    const id = await group(a!, [b!, c!]);
    const ben = await liveSession(b!);
    const cat = await liveSession(c!);
    await b!.chat.watchPresence({ userIds: [a!.userId] });
    await c!.chat.watchPresence({ userIds: [a!.userId] });

    await a!.chat.removeMember({ conversationId: id, userId: b!.userId });
    await expect(b!.chat.getPresence({ userIds: [a!.userId] })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    const ann = await liveSession(a!);
    await cat.frames.until((f) => presenceOf(f, a!.userId).length === 1, 5000, "cat hears");
    await settle(300);
    expect(ben.frames.of("presence")).toEqual([]);
    for (const s of [ann, ben, cat]) s.close();
  });

  it("caps the users one device watches", async () => {
    server = await startServer({ limits: { presenceWatchMax: 2 } });
    const [a, b, c, d] = await Promise.all(
      ["ann", "ben", "cat", "dan"].map((n) => login(server!, n)),
    );
    await group(a!, [b!, c!, d!]);
    await a!.chat.watchPresence({ userIds: [b!.userId, c!.userId] });
    await expect(a!.chat.watchPresence({ userIds: [d!.userId] })).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
    await expect(
      a!.chat.watchPresence({ userIds: [b!.userId, c!.userId, d!.userId] }),
    ).rejects.toMatchObject({ code: Code.ResourceExhausted });
    // Watching someone already watched adds nothing.
    await a!.chat.watchPresence({ userIds: [b!.userId] });
    // The cap is per device.
    const other = await login(server, "ann", "ann-other");
    await other.chat.watchPresence({ userIds: [d!.userId] });
    await a!.chat.unwatchPresence({ userIds: [c!.userId] });
    const res = await a!.chat.watchPresence({ userIds: [d!.userId] });
    expect(res.presences.map((p) => p.userId)).toEqual([d!.userId]);
  });

  it("works through Session frames, answering with the current presence", async () => {
    server = await startServer(timing);
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    await group(a, [b]);
    const ben = await liveSession(b);

    ben.send({
      frameId: "w1",
      action: { case: "watchPresence", value: { userIds: [a.userId] } },
    });
    await ben.frames.until(
      (f) => f.all.some((x) => x.frame.case === "accepted" && x.replyToFrameId === "w1"),
      5000,
      "accepted w1",
    );
    const replies = ben.frames.all.filter((x) => x.replyToFrameId === "w1");
    expect(replies.map((x) => x.frame.case)).toEqual(["presence", "accepted"]);
    expect(replies[0]!.frame.value).toMatchObject({ userId: a.userId, online: false });

    const ann = await liveSession(a);
    await ben.frames.until((f) => presenceOf(f, a.userId).length === 2, 5000, "live presence");
    const live = ben.frames.all.filter((x) => x.frame.case === "presence").at(-1)!;
    expect(live.replyToFrameId).toBe("");
    expect(live.frame.value).toMatchObject({ userId: a.userId, online: true });

    ben.send({
      frameId: "u1",
      action: { case: "unwatchPresence", value: { userIds: [a.userId] } },
    });
    await ben.frames.until(
      (f) => f.all.some((x) => x.frame.case === "accepted" && x.replyToFrameId === "u1"),
      5000,
      "accepted u1",
    );
    ann.close();
    await settle(presenceTtlMs + 400);
    expect(presenceOf(ben.frames, a.userId)).toHaveLength(2);

    // A denied watch is an error frame; the stream goes on.
    const c = await login(server, "cat");
    ben.send({ frameId: "w2", action: { case: "watchPresence", value: { userIds: [c.userId] } } });
    await ben.frames.until((f) => f.all.some((x) => x.replyToFrameId === "w2"), 5000, "reply w2");
    const denied = ben.frames.all.find((x) => x.replyToFrameId === "w2")!;
    expect(denied.frame.case === "error" && denied.frame.value.code).toBe(Code.PermissionDenied);
    expect(ben.frames.ended).toBe(false);
    ben.close();
  });
});

describe("heartbeats", () => {
  it("ends a silent Session stream with DEADLINE_EXCEEDED and keeps a heartbeating one open", async () => {
    server = await startServer(timing);
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const openedAt = Date.now();
    const silent = openSession(a.chat);
    const alive = await liveSession(b);

    await silent.frames.untilEnded(5000);
    expect(silent.frames.error?.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - openedAt).toBeGreaterThanOrEqual(2 * heartbeatIntervalMs);
    expect(silent.frames.of("ready")[0]!.heartbeatIntervalMs).toBe(heartbeatIntervalMs);

    await settle(6 * heartbeatIntervalMs);
    expect(alive.frames.ended).toBe(false);
    const replies = alive.frames.all.filter((x) => x.frame.case === "heartbeat");
    expect(replies.length).toBeGreaterThanOrEqual(10);
    expect(replies.every((x) => x.replyToFrameId.startsWith("hb"))).toBe(true);
    alive.close();
  });

  it("sends server heartbeats on Subscribe and keeps it open while the device calls Heartbeat", async () => {
    server = await startServer(timing);
    const a = await login(server, "ann");
    const sub = openSubscribe(a.chat);
    const beat = setInterval(() => void a.chat.heartbeat({}).catch(() => undefined), 50);
    try {
      await sub.frames.synced();
      await settle(8 * heartbeatIntervalMs);
      expect(sub.frames.ended).toBe(false);
      const beats = sub.frames.all.filter((x) => x.frame.case === "heartbeat");
      expect(beats.length).toBeGreaterThanOrEqual(4);
      expect(beats.every((x) => x.replyToFrameId === "")).toBe(true);
    } finally {
      clearInterval(beat);
    }
    // Without the device's heartbeats, the stream counts as gone.
    await sub.frames.untilEnded(5000);
    expect(sub.frames.error?.code).toBe(Code.DeadlineExceeded);
  });
});
