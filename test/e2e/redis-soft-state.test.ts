import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import type { ConfigInput } from "../../lib/config.js";
import { direct, login, openSession, settle } from "../helpers/clients.js";
import {
  dropKeys,
  ensurePulsar,
  ensureRedis,
  redisUrl,
  startPrivateRedis,
} from "../helpers/dev-env.js";
import { sample, scrape } from "../helpers/metrics.js";
import { startServer, type TestServer } from "../helpers/server.js";

await ensureRedis();

let server: TestServer | undefined;
let prefix = "";
let privateRedis: Awaited<ReturnType<typeof startPrivateRedis>> | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
  await privateRedis?.down();
  privateRedis = undefined;
  await dropKeys(prefix);
});

/** A server whose soft state lives in Redis under a prefix of its own. */
async function start(url = redisUrl, overrides: ConfigInput = {}) {
  prefix = `e2e:${process.pid}:${Math.random().toString(36).slice(2)}:`;
  server = await startServer({
    redis: { url, keyPrefix: prefix },
    limits: { sendPerSecond: 1000, sendBurst: 1000 },
    ...overrides,
  });
  return server;
}

/** Runs `use` on a connection of the test's own to the Redis at `url`, behind the server's back. */
async function behindTheServer<T>(url: string, use: (admin: Redis) => Promise<T>): Promise<T> {
  const admin = new Redis(url, { maxRetriesPerRequest: 0 });
  try {
    return await use(admin);
  } finally {
    admin.disconnect();
  }
}

/** Refuses (or allows again) the server's PUBLISH on a private Redis: the bus fails, nothing else does. */
const publishing = (url: string, allowed: boolean) =>
  behindTheServer(url, (admin) =>
    admin.call("ACL", "SETUSER", "default", allowed ? "+publish" : "-publish"),
  );

const seqsOf = (events: { seq: bigint }[]) => events.map((e) => Number(e.seq));
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe("soft state in Redis", () => {
  it("delivers live, exactly once and in order, through Redis' registry and bus", async () => {
    const s = await start();
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const live = openSession(ben.chat);
    await live.frames.synced();
    for (let i = 0; i < 20; i++) {
      await ann.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: { text: `${i}` } });
    }
    await live.frames.until((f) => f.events(id).length >= 21, 5000, "20 messages");
    await settle(200);
    expect(seqsOf(live.frames.events(id))).toEqual(range(1, 21));
    // Presence went through Redis too.
    const seen = await ann.chat.getPresence({ userIds: ["ben"] });
    expect(seen.presences[0]?.online).toBe(true);
    live.abort();
  });

  it("loses no message and reuses no seq when Redis loses everything, even with sends in flight", async () => {
    const s = await start();
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const live = openSession(ben.chat);
    await live.frames.synced();
    for (let i = 0; i < 5; i++) {
      await ann.chat.send({ conversationId: id, clientMsgId: `a${i}`, content: { text: `a${i}` } });
    }

    // 60 sends at once; Redis loses every key (counters, registry, presence) while they run.
    // A client retries a failed send with the same client_msg_id, as the contract asks.
    const sendOnce = async (i: number): Promise<bigint> => {
      for (let attempt = 0; ; attempt++) {
        try {
          const res = await ann.chat.send({
            conversationId: id,
            clientMsgId: `b${i}`,
            content: { text: `b${i}` },
          });
          return res.event!.seq;
        } catch (err) {
          const code = ConnectError.from(err).code;
          if (attempt >= 5 || (code !== Code.Aborted && code !== Code.Unavailable)) throw err;
        }
      }
    };
    const inFlight = Array.from({ length: 60 }, (_, i) => sendOnce(i));
    await dropKeys(prefix);
    const seqs = (await Promise.all(inFlight)).map(Number);
    expect(new Set(seqs).size).toBe(60);
    expect([...seqs].sort((a, b) => a - b)).toEqual(range(7, 60));

    // The counter reseeds from the durable head: the next send takes the next seq.
    const after = await ann.chat.send({
      conversationId: id,
      clientMsgId: "c0",
      content: { text: "c0" },
    });
    expect(after.event!.seq).toBe(67n);

    // Ben's stream lost its registry entry; a heartbeat attaches it again, and
    // whatever passed it by comes as a gap filled from the store.
    live.send({ action: { case: "heartbeat", value: {} } });
    await settle(100);
    await ann.chat.send({ conversationId: id, clientMsgId: "c1", content: { text: "c1" } });
    await live.frames.until((f) => f.events(id).some((e) => e.seq === 68n), 5000, "seq 68");
    await settle(300);
    expect(seqsOf(live.frames.events(id))).toEqual(range(1, 68));

    const history = await ben.chat.getHistory({ conversationId: id, limit: 200 });
    expect(seqsOf(history.events)).toEqual(range(1, 68));
    const texts = history.events.flatMap((e) =>
      e.kind.case === "messagePosted" ? [e.kind.value.content?.text ?? ""] : [],
    );
    expect(new Set(texts).size).toBe(67);
    live.abort();
  });

  it("resumes the seq after a restart whose Redis is empty", async () => {
    const s = await start();
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben");
    const id = await direct(ann, ben);
    for (let i = 0; i < 3; i++) {
      await ann.chat.send({ conversationId: id, clientMsgId: `r${i}`, content: { text: `${i}` } });
    }
    await s.stop();
    await dropKeys(prefix);
    server = await s.restart();
    const again = await login(server, "ann", "ann-phone");
    const res = await again.chat.send({
      conversationId: id,
      clientMsgId: "r3",
      content: { text: "3" },
    });
    expect(res.event!.seq).toBe(5n);
    // A retry across the restart is still the original: dedup is durable, not in Redis.
    const retry = await again.chat.send({
      conversationId: id,
      clientMsgId: "r1",
      content: { text: "1" },
    });
    expect(retry.event!.seq).toBe(3n);
  });

  it("answers UNAVAILABLE while Redis is down, loses nothing acknowledged, and recovers without reusing a seq", async () => {
    privateRedis = await startPrivateRedis();
    const s = await start(privateRedis.url);
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben");
    const id = await direct(ann, ben);
    const live = openSession(ben.chat);
    await live.frames.synced();
    for (let i = 0; i < 3; i++) {
      await ann.chat.send({ conversationId: id, clientMsgId: `u${i}`, content: { text: `${i}` } });
    }

    await privateRedis.down();
    const during = ann.chat.send({ conversationId: id, clientMsgId: "u3", content: { text: "3" } });
    await expect(during).rejects.toMatchObject({ code: Code.Unavailable });
    // The store does not need Redis: what was acknowledged reads as before.
    const before = await ben.chat.getHistory({ conversationId: id, limit: 10 });
    expect(seqsOf(before.events)).toEqual(range(1, 4));

    // Redis comes back empty; the client retries the failed send with its key.
    await privateRedis.up();
    let retried: bigint | undefined;
    for (let i = 0; i < 50 && retried === undefined; i++) {
      try {
        const res = await ann.chat.send({
          conversationId: id,
          clientMsgId: "u3",
          content: { text: "3" },
        });
        retried = res.event!.seq;
      } catch (err) {
        expect(ConnectError.from(err).code).toBe(Code.Unavailable);
        await settle(100);
      }
    }
    expect(retried).toBe(5n);
    const next = await ann.chat.send({
      conversationId: id,
      clientMsgId: "u4",
      content: { text: "4" },
    });
    expect(next.event!.seq).toBe(6n);
    const after = await ben.chat.getHistory({ conversationId: id, limit: 10 });
    expect(seqsOf(after.events)).toEqual(range(1, 6));
    // Ben's stream never heartbeated since: the server wrote its registry entry
    // again when Redis came back, so delivery went on live, exactly once.
    await live.frames.until((f) => f.events(id).some((e) => e.seq === 6n), 5000, "seq 6 live");
    await settle(200);
    expect(seqsOf(live.frames.events(id))).toEqual(range(1, 6));
    expect(live.frames.of("heartbeat").length).toBe(0);
    live.abort();
  });

  it("fans acknowledged events out once the bus is back, in order and once, when publishing failed after their commits", async () => {
    privateRedis = await startPrivateRedis();
    const s = await start(privateRedis.url);
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const live = openSession(ben.chat);
    await live.frames.synced();
    await ann.chat.send({ conversationId: id, clientMsgId: "b0", content: { text: "0" } });
    await live.frames.until((f) => f.events(id).length >= 2, 5000, "the first message live");

    // Sequencing, the registry and the store still work, so the sends are acked.
    await publishing(privateRedis.url, false);
    const acked: bigint[] = [];
    for (let i = 1; i <= 3; i++) {
      const res = await ann.chat.send({
        conversationId: id,
        clientMsgId: `b${i}`,
        content: { text: `${i}` },
      });
      acked.push(res.event!.seq);
    }
    expect(acked).toEqual([3n, 4n, 5n]);
    await settle(400);
    expect(seqsOf(live.frames.events(id))).toEqual(range(1, 2));

    // No further send: the fan-out itself tries again.
    await publishing(privateRedis.url, true);
    await live.frames.until((f) => f.events(id).length >= 5, 5000, "the held events live");
    await settle(300);
    expect(seqsOf(live.frames.events(id))).toEqual(range(1, 5));
    const text = await scrape(s);
    expect(sample(text, "chat_fanout_retries_total")).toBeGreaterThan(0);
    expect(sample(text, "chat_fanout_abandoned_total")).toBe(0);
    live.abort();
  });

  it("gives a fan-out up after the retry window and lets the next event's gap bring it", async () => {
    privateRedis = await startPrivateRedis();
    const s = await start(privateRedis.url, { session: { fanoutRetryMs: 300 } });
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const live = openSession(ben.chat);
    await live.frames.synced();

    await publishing(privateRedis.url, false);
    await ann.chat.send({ conversationId: id, clientMsgId: "g1", content: { text: "1" } });
    let abandoned = 0;
    for (let i = 0; i < 50 && abandoned === 0; i++) {
      await settle(100);
      abandoned = sample(await scrape(s), "chat_fanout_abandoned_total");
    }
    expect(abandoned).toBe(1);
    await publishing(privateRedis.url, true);
    await settle(300);
    // Abandoned means not retried: the stream has not seen seq 2.
    expect(seqsOf(live.frames.events(id))).toEqual([1]);

    // The conversation is not held behind it: the next event comes, and its gap is read.
    await ann.chat.send({ conversationId: id, clientMsgId: "g2", content: { text: "2" } });
    await live.frames.until((f) => f.events(id).length >= 3, 5000, "the gap filled");
    await settle(200);
    expect(seqsOf(live.frames.events(id))).toEqual(range(1, 3));
    live.abort();
  });

  it("answers a read mark made while the bus fails, and the reader's other device hears it once the bus is back", async () => {
    privateRedis = await startPrivateRedis();
    const s = await start(privateRedis.url);
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const tablet = await login(s, "ben", "ben-tablet");
    const id = await direct(ann, ben);
    await ann.chat.send({ conversationId: id, clientMsgId: "r1", content: { text: "1" } });
    const other = openSession(tablet.chat);
    await other.frames.synced();

    await publishing(privateRedis.url, false);
    // The mark is stored: failing the call would make a retry find nothing to tell.
    const res = await ben.chat.markRead({ conversationId: id, seq: 2n });
    expect(res.receipt?.readSeq).toBe(2n);
    await settle(300);
    expect(other.frames.of("receipt")).toEqual([]);

    await publishing(privateRedis.url, true);
    await other.frames.until(
      (f) => f.of("receipt").some((r) => r.userId === "ben" && r.readSeq === 2n),
      5000,
      "the read mark on ben's other device",
    );
    other.abort();
  });

  it("gives a sending Session one copy of its message when the fallback ack went first and the fan-out came after", async () => {
    privateRedis = await startPrivateRedis();
    const s = await start(privateRedis.url);
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const mine = openSession(ann.chat);
    await mine.frames.synced();

    await publishing(privateRedis.url, false);
    mine.send({
      frameId: "f1",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "a1", content: { text: "1" } },
      },
    });
    // No fan-out reaches the stream, so the durable send is acked directly (after 3 s).
    await mine.frames.until((f) => f.of("sendAck").length > 0, 10_000, "the fallback ack");
    expect(mine.frames.of("sendAck")[0]!.event!.seq).toBe(2n);
    // The retried fan-out comes once the bus is back; a second message fences it.
    await publishing(privateRedis.url, true);
    await ann.chat.send({ conversationId: id, clientMsgId: "a2", content: { text: "2" } });
    await mine.frames.until((f) => f.events(id).some((e) => e.seq === 3n), 5000, "the fence");
    await settle(300);
    expect(seqsOf(mine.frames.events(id))).toEqual(range(1, 3));
    mine.abort();
  });

  it("with the log in Pulsar, reseeds a counter that ran ahead of the conversation instead of leaving a hole behind an acknowledged send", async () => {
    privateRedis = await startPrivateRedis();
    const s = await start(privateRedis.url, {
      pulsar: {
        webUrl: (await ensurePulsar()).webUrl,
        topic: `persistent://public/default/reseed-${process.pid}-${Date.now()}`,
      },
    });
    const ann = await login(s, "ann", "ann-phone");
    const ben = await login(s, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const first = await ann.chat.send({
      conversationId: id,
      clientMsgId: "h1",
      content: { text: "1" },
    });
    expect(first.event!.seq).toBe(2n);
    // An increment the router never saw (it timed out, then Redis ran it).
    const counter = await behindTheServer(privateRedis.url, (admin) =>
      admin.incr(`${prefix}seq:${id}`),
    );
    expect(counter).toBe(3);
    const next = await ann.chat.send({
      conversationId: id,
      clientMsgId: "h2",
      content: { text: "2" },
    });
    expect(next.event!.seq).toBe(3n);
    // The store takes it (a hole would have it refused after Pulsar acknowledged it).
    const history = await ben.chat.getHistory({ conversationId: id, limit: 10 });
    expect(seqsOf(history.events)).toEqual(range(1, 3));
  });
});
