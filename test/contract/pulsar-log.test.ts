import { randomBytes } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import WebSocket from "ws";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import {
  createPulsarLog,
  type PulsarLogOptions,
  topicPath,
} from "../../lib/backends/pulsar/pulsar-log.js";
import { BackendUnavailableError, SeqConflictError } from "../../lib/errors.js";
import { decodeEvent } from "../../lib/event-bytes.js";
import { createRootLogger } from "../../lib/logger.js";
import { ensurePulsar, startPrivatePulsar } from "../helpers/dev-env.js";
import { ev, newConversationId, sleep } from "./fixtures.js";
import { messageLogContract } from "./message-log.contract.js";

// A real broker on two cores shared with the rest of the suite: its redeliveries take their time.
vi.setConfig({ testTimeout: 60_000 });

const broker = await ensurePulsar();
const logger = createRootLogger("silent");

/** A topic of the test's own: each one starts empty. */
const freshTopic = () => `persistent://public/default/test-${randomBytes(6).toString("hex")}`;

// Generous waits: the broker shares two cores with the rest of the suite.
const openLog = (topic: string, webUrl = broker.webUrl, more: Partial<PulsarLogOptions> = {}) =>
  createPulsarLog({
    webUrl,
    topic,
    subscription: "store",
    log: logger,
    sendTimeoutMs: 3000,
    catchUpTimeoutMs: 30_000,
    ...more,
  });

messageLogContract(
  "Pulsar log",
  async () => {
    const log = openLog(freshTopic());
    return { log, cleanup: () => log.close() };
  },
  { judges: false },
);

/** The first `n` messages of a topic, from its start, decoded as events. */
async function readTopic(topic: string, n: number) {
  const url = `${broker.webUrl.replace(/^http/, "ws")}/ws/v2/reader/${topicPath(topic)}?messageId=earliest`;
  const ws = new WebSocket(url);
  const got: { event: Event; refused: string | undefined }[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${got.length} of ${n}`)), 20_000);
      ws.on("error", reject);
      ws.on("message", (data) => {
        const m = JSON.parse(String(data)) as {
          messageId: string;
          payload: string;
          properties?: Record<string, string>;
        };
        ws.send(JSON.stringify({ messageId: m.messageId }));
        got.push({
          event: decodeEvent(Buffer.from(m.payload, "base64")),
          refused: m.properties?.["relaychat-refused"],
        });
        if (got.length === n) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    ws.terminate();
  }
  return got;
}

/** A consumer that commits each event once, as the store does (what comes again is stored already). */
const committing = (into: Event[]) => async (batch: Event[]) => {
  for (const e of batch) if (!into.some((c) => c.eventId === e.eventId)) into.push(e);
  return batch.map(() => undefined);
};

/**
 * Appends a new event from `make` until the log takes one (each refusal must be
 * UNAVAILABLE, pausing `pauseMs` between tries); resolves to the one it took.
 */
async function appendOnceBack(
  log: ReturnType<typeof openLog>,
  make: () => Event,
  pauseMs: number,
): Promise<Event> {
  for (;;) {
    const e = make();
    try {
      await log.append(e);
      return e;
    } catch (err) {
      expect(err).toBeInstanceOf(BackendUnavailableError);
      await sleep(pauseMs);
    }
  }
}

describe("Pulsar log, beyond the contract", () => {
  it("names the WebSocket path of a persistent topic and refuses other names", () => {
    expect(topicPath("persistent://public/default/events")).toBe(
      "persistent/public/default/events",
    );
    expect(() => topicPath("non-persistent://public/default/events")).toThrow();
    expect(() => topicPath("public/default/events")).toThrow();
  });

  /**
   * Three events on a fresh topic, acknowledged to their senders by a process that died
   * before its store consumed them; resolves to what a new process's open() had committed.
   */
  async function takeOver(whileOpening: () => () => void = () => () => {}) {
    const topic = freshTopic();
    const conv = newConversationId();
    const earlier = openLog(topic);
    const appended = [1, 2, 3].map((seq) => ev.posted(conv, seq, "ann", `m${seq}`));
    for (const e of appended) await earlier.append(e);
    await earlier.close();

    const later = openLog(topic);
    const done = whileOpening();
    try {
      const seen: Event[] = [];
      later.consume(committing(seen));
      await later.open();
      done();
      return { appended: appended.map((e) => e.eventId), seen: seen.map((e) => e.eventId) };
    } finally {
      done();
      await later.close();
    }
  }

  it("hands a new process on the topic what an earlier one appended and its store never committed, before open() resolves", async () => {
    const { appended, seen } = await takeOver();
    expect(seen).toEqual(appended);
  });

  it("loses none of the backlog when it arrives with the consumer's handshake, to a process too busy to read in between", async () => {
    // The event loop mostly blocked: the handshake's answer and the first events
    // pile up and are read in one go.
    const { appended, seen } = await takeOver(() => {
      const busy = setInterval(() => {
        const until = Date.now() + 30;
        while (Date.now() < until);
      }, 1);
      return () => clearInterval(busy);
    });
    expect(seen).toEqual(appended);
  });

  it("moves an acknowledged event the store keeps refusing to the dead-letter topic, its conversation's later refusals at once, and goes on", async () => {
    const topic = freshTopic();
    const log = openLog(topic, broker.webUrl, { catchUpTimeoutMs: 60_000, maxRefusals: 3 });
    const bad = newConversationId();
    const fine = newConversationId();
    const committed: string[] = [];
    const refusals = new Map<string, number>();
    // A store that never takes seq 2 of `bad`, nor anything after it there, as a bug would.
    log.consume(async (batch) =>
      batch.map((e) => {
        if (e.conversationId === bad && e.seq >= 2n) {
          refusals.set(e.eventId, (refusals.get(e.eventId) ?? 0) + 1);
          return new SeqConflictError(bad, 2n, e.seq);
        }
        if (!committed.includes(e.eventId)) committed.push(e.eventId);
        return undefined;
      }),
    );
    try {
      await log.open();
      const b1 = ev.posted(bad, 1, "ann", "b1");
      const b2 = ev.posted(bad, 2, "ann", "b2");
      const f1 = ev.posted(fine, 1, "ann", "f1");
      for (const e of [b1, b2, f1]) await log.append(e);
      await log.caughtUp();
      expect(committed).toEqual([b1.eventId, f1.eventId]);
      expect(refusals.get(b2.eventId)).toBe(3);

      const b3 = ev.posted(bad, 3, "ann", "b3");
      const f2 = ev.posted(fine, 2, "ann", "f2");
      for (const e of [b3, f2]) await log.append(e);
      await log.caughtUp();
      expect(refusals.get(b3.eventId)).toBe(1);
      expect(committed).toEqual([b1.eventId, f1.eventId, f2.eventId]);

      // Kept, in order, with why: nothing acknowledged is dropped.
      const dead = await readTopic(`${topic}-dead-letter`, 2);
      expect(dead.map((d) => d.event.eventId)).toEqual([b2.eventId, b3.eventId]);
      expect(dead[0]!.event).toEqual(b2);
      expect(dead[0]!.refused).toMatch(/seq/);
    } finally {
      await log.close();
    }
  });

  it("takes a verdict of the backend's failure as a failed commit to try again, not as a refusal", async () => {
    const log = openLog(freshTopic(), broker.webUrl, { maxRefusals: 1 });
    const committed: string[] = [];
    let failures = 0;
    log.consume(async (batch) =>
      batch.map((e) => {
        // The store could not commit it this time (its conversation's node timed out).
        if (failures++ === 0) return new BackendUnavailableError("cassandra unavailable");
        if (!committed.includes(e.eventId)) committed.push(e.eventId);
        return undefined;
      }),
    );
    try {
      await log.open();
      const e = ev.posted(newConversationId(), 1, "ann", "again");
      await log.append(e);
      await log.caughtUp();
      expect(committed).toEqual([e.eventId]);
      expect(failures).toBeGreaterThan(1);
    } finally {
      await log.close();
    }
  });

  it("does not start its consumer over while the store is still committing a batch", async () => {
    const log = openLog(freshTopic(), broker.webUrl, { stallMs: 400 });
    const handed = new Map<string, number>();
    let slow = true;
    log.consume(async (batch) => {
      for (const e of batch) handed.set(e.eventId, (handed.get(e.eventId) ?? 0) + 1);
      // Longer than stallMs: nothing arrives meanwhile, while the event waits for its commit.
      if (slow) await sleep(1500);
      slow = false;
      return batch.map(() => undefined);
    });
    try {
      await log.open();
      const conv = newConversationId();
      const e = ev.posted(conv, 1, "ann", "slow");
      await log.append(e);
      await log.caughtUp(conv);
      await sleep(800);
      expect(handed.get(e.eventId)).toBe(1);
    } finally {
      await log.close();
    }
  });

  it("lets only one process consume a topic", async () => {
    const topic = freshTopic();
    const first = openLog(topic);
    const second = createPulsarLog({
      webUrl: broker.webUrl,
      topic,
      subscription: "store",
      log: logger,
      openTimeoutMs: 1500,
    });
    try {
      first.consume(committing([]));
      await first.open();
      second.consume(committing([]));
      await expect(second.open()).rejects.toBeInstanceOf(BackendUnavailableError);
    } finally {
      await first.close();
      await second.close();
    }
  });

  it("after a send whose receipt did not come in time, takes appends again only once that event is committed or certainly not in the log", async () => {
    const own = await startPrivatePulsar();
    const seen: Event[] = [];
    const log = createPulsarLog({
      webUrl: own.webUrl,
      topic: freshTopic(),
      subscription: "store",
      log: logger,
      sendTimeoutMs: 1000,
    });
    const conv = newConversationId();
    try {
      log.consume(committing(seen));
      await log.open();
      // The broker stops answering with the send in its socket, and takes it once it runs again.
      process.kill(own.pid(), "SIGSTOP");
      const late = ev.posted(conv, 1, "ann", "late", { clientMsgId: "k-late" });
      await expect(log.append(late)).rejects.toBeInstanceOf(BackendUnavailableError);
      // Its fate unknown, its key stays taken: a retry of it is neither sent again
      // nor answered with it (it may never land), but told to come back.
      expect(() => log.pendingKey(conv, "ann", "k-late")).toThrow(BackendUnavailableError);
      await expect(log.append(ev.posted(conv, 1, "ann", "meanwhile"))).rejects.toBeInstanceOf(
        BackendUnavailableError,
      );
      process.kill(own.pid(), "SIGCONT");
      // Appends come back once the log knows; the late event, if it landed, is consumed before.
      const next = await appendOnceBack(log, () => ev.posted(conv, 2, "ann", "next"), 100);
      await log.caughtUp();
      const ids = seen.map((e) => e.eventId);
      expect(ids).toContain(next.eventId);
      const at = ids.indexOf(late.eventId);
      if (at >= 0) expect(at).toBeLessThan(ids.indexOf(next.eventId));
      expect(log.pendingKey(conv, "ann", "k-late")).toBeUndefined();
    } finally {
      process.kill(own.pid(), "SIGCONT");
      await log.close();
      await own.stop();
    }
  }, 240_000);

  it("answers UNAVAILABLE while the broker is away, and loses nothing it acknowledged", async () => {
    const own = await startPrivatePulsar();
    const topic = freshTopic();
    const conv = newConversationId();
    const seen: Event[] = [];
    const log = openLog(topic, own.webUrl);
    try {
      log.consume(committing(seen));
      await log.open();
      const before = [1, 2].map((seq) => ev.posted(conv, seq, "ann", `m${seq}`));
      for (const e of before) await log.append(e);
      await log.caughtUp();
      await own.kill();
      await expect(log.append(ev.posted(conv, 3, "ann", "while away"))).rejects.toBeInstanceOf(
        BackendUnavailableError,
      );
      await own.restart();
      // Once the broker is back, appends go through again (after the resync the failure started).
      const after = await appendOnceBack(log, () => ev.posted(conv, 3, "ann", "m3"), 250);
      await log.caughtUp();
      const ids = seen.map((e) => e.eventId);
      for (const e of [...before, after]) expect(ids).toContain(e.eventId);
      // In append order.
      expect(ids.filter((id) => before.some((e) => e.eventId === id))).toEqual(
        before.map((e) => e.eventId),
      );
    } finally {
      await log.close();
      await own.stop();
    }
  }, 240_000);
});
