import { describe, expect, it } from "vitest";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { MessageLog } from "../../lib/backends/message-log.js";
import { BackendUnavailableError, SeqConflictError } from "../../lib/errors.js";
import { ev, freshPerTest, newConversationId, sleep, waitFor } from "./fixtures.js";

export type MessageLogFactory = () => Promise<{ log: MessageLog; cleanup(): Promise<void> }>;

type Handler = (batch: Event[]) => Promise<(Error | undefined)[]>;

/** Tracks whether a promise has settled, and how. */
function watch<T>(p: Promise<T>) {
  const state = { settled: false, error: undefined as unknown, promise: p };
  p.then(
    () => {
      state.settled = true;
    },
    (err: unknown) => {
      state.settled = true;
      state.error = err;
    },
  );
  return state;
}

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

const accept: Handler = async (batch) => batch.map(() => undefined);

/** A consumer that accepts every batch once `release` opens, noting the event ids it handled. */
function consumeBehindGate(log: MessageLog) {
  const release = gate();
  const handled: string[] = [];
  log.consume(async (batch) => {
    await release.opened;
    for (const e of batch) handled.push(e.eventId);
    return batch.map(() => undefined);
  });
  return { release, handled };
}

/**
 * The MessageLog contract: every implementation (in-process, Pulsar) must
 * pass it. The log is exercised only through its interface. `judges` says
 * which kind it is: a log whose appends settle with the consumer's verdict,
 * or one whose appends settle once the log holds them (the consumer catches
 * up later, and is handed again whatever it did not commit).
 */
export function messageLogContract(
  name: string,
  factory: MessageLogFactory,
  kind: { judges: boolean },
) {
  describe(`MessageLog contract: ${name}`, () => {
    const fresh = freshPerTest(factory);
    const open = async () => {
      const { log } = await fresh();
      expect(log.judges).toBe(kind.judges);
      return log;
    };

    it("hands the consumer each conversation's events in append order", async () => {
      const log = await open();
      const seen = new Map<string, bigint[]>();
      log.consume(async (batch) =>
        batch.map((e) => {
          const list = seen.get(e.conversationId) ?? [];
          seen.set(e.conversationId, list);
          const head = list.at(-1) ?? 0n;
          if (!kind.judges) {
            // As the store takes them: what comes again is committed already, and an event
            // ahead of its turn (after a consumer restart) is refused until it comes again.
            if (e.seq <= head) return undefined;
            if (e.seq !== head + 1n)
              return new SeqConflictError(e.conversationId, head + 1n, e.seq);
          }
          list.push(e.seq);
          return undefined;
        }),
      );
      const convs = [newConversationId(), newConversationId(), newConversationId()];
      const appends: Promise<void>[] = [];
      for (let seq = 1; seq <= 60; seq++) {
        for (const c of convs) appends.push(log.append(ev.posted(c, seq, "ann", `${seq}`)));
        // Spread the appends over several batches as well.
        if (seq % 20 === 0) await Promise.resolve();
      }
      await Promise.all(appends);
      await log.caughtUp();
      const expected = Array.from({ length: 60 }, (_, i) => BigInt(i + 1));
      for (const c of convs) expect(seen.get(c)).toEqual(expected);
    });

    it("refuses appends after close", async () => {
      const log = await open();
      log.consume(accept);
      await log.close();
      await expect(
        log.append(ev.posted(newConversationId(), 1, "ann", "late")),
      ).rejects.toBeInstanceOf(BackendUnavailableError);
    });

    if (kind.judges) judgingCases(open);
    else unjudgedCases(open);
  });
}

/** A log whose appends settle with the consumer's verdict (the in-process log). */
function judgingCases(open: () => Promise<MessageLog>) {
  describe("with verdicts", () => {
    it("is caught up with whatever has settled, and holds no keys of its own", async () => {
      const log = await open();
      log.consume(accept);
      const conv = newConversationId();
      await log.append(ev.posted(conv, 1, "ann", "x", { clientMsgId: "k1" }));
      await log.caughtUp(conv);
      await log.caughtUp();
      expect(log.pendingKey(conv, "ann", "k1")).toBeUndefined();
    });

    it("resolves an append only after the consumer handled its event", async () => {
      const log = await open();
      const { release, handled } = consumeBehindGate(log);
      const event = ev.posted(newConversationId(), 2, "ann", "hi");
      const append = watch(log.append(event));
      await sleep(50);
      expect(append.settled).toBe(false);
      release.open();
      await append.promise;
      expect(handled).toEqual([event.eventId]);
    });

    it("rejects only the append whose event got a verdict error", async () => {
      const log = await open();
      const conv = newConversationId();
      const events = [1, 2, 3, 4].map((seq) => ev.posted(conv, seq, "ann", `m${seq}`));
      log.consume(async (batch) =>
        batch.map((e) => (e.seq === 3n ? new SeqConflictError(conv, 9n, e.seq) : undefined)),
      );
      const results = await Promise.allSettled(events.map((e) => log.append(e)));
      expect(results.map((r) => r.status)).toEqual([
        "fulfilled",
        "fulfilled",
        "rejected",
        "fulfilled",
      ]);
      const reason = (results[2] as PromiseRejectedResult).reason;
      expect(reason).toBeInstanceOf(SeqConflictError);
      expect((reason as SeqConflictError).got).toBe(3n);
    });

    it("fails every append of a batch whose consumer throws, and keeps consuming", async () => {
      const log = await open();
      const conv = newConversationId();
      const failedBatch: string[] = [];
      let calls = 0;
      log.consume(async (batch) => {
        calls++;
        if (calls === 1) {
          for (const e of batch) failedBatch.push(e.eventId);
          throw new Error("disk on fire");
        }
        return batch.map(() => undefined);
      });
      const first = [1, 2, 3].map((seq) => ev.posted(conv, seq, "ann", `m${seq}`));
      const results = await Promise.allSettled(first.map((e) => log.append(e)));
      expect(failedBatch.length).toBeGreaterThan(0);
      results.forEach((r, i) => {
        if (failedBatch.includes(first[i]!.eventId)) {
          expect(r.status).toBe("rejected");
          expect((r as PromiseRejectedResult).reason).toBeInstanceOf(BackendUnavailableError);
        } else {
          expect(r.status).toBe("fulfilled");
        }
      });
      // The log is still usable after a failed batch.
      await expect(log.append(ev.posted(conv, 4, "ann", "after"))).resolves.toBeUndefined();
    });

    it("delivers appends made before the consumer registered once it does", async () => {
      const log = await open();
      const conv = newConversationId();
      const events = [1, 2, 3].map((seq) => ev.posted(conv, seq, "ann", `early${seq}`));
      const appends = events.map((e) => watch(log.append(e)));
      await sleep(50);
      expect(appends.some((a) => a.settled)).toBe(false);
      const handled: string[] = [];
      log.consume(async (batch) => {
        for (const e of batch) handled.push(e.eventId);
        return batch.map(() => undefined);
      });
      await Promise.all(appends.map((a) => a.promise));
      expect(handled).toEqual(events.map((e) => e.eventId));
    });

    it("rejects pending appends on close, and appends after close", async () => {
      const log = await open();
      const conv = newConversationId();
      // No consumer: the appends stay pending until close.
      const pending = [1, 2].map((seq) => log.append(ev.posted(conv, seq, "ann", "x")));
      const outcome = Promise.allSettled(pending);
      await sleep(20);
      await log.close();
      for (const r of await outcome) {
        expect(r.status).toBe("rejected");
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(BackendUnavailableError);
      }
      await expect(log.append(ev.posted(conv, 3, "ann", "late"))).rejects.toBeInstanceOf(
        BackendUnavailableError,
      );
    });

    it("groups appends that arrive while a batch is being handled into one batch", async () => {
      const log = await open();
      const conv = newConversationId();
      const release = gate();
      const sizes: number[] = [];
      log.consume(async (batch) => {
        sizes.push(batch.length);
        if (sizes.length === 1) await release.opened;
        return accept(batch);
      });
      const first = log.append(ev.posted(conv, 1, "ann", "first"));
      await waitFor(() => sizes.length === 1, 5000, "first batch");
      const rest = Array.from({ length: 20 }, (_, i) =>
        log.append(ev.posted(conv, i + 2, "ann", `m${i}`)),
      );
      release.open();
      await Promise.all([first, ...rest]);
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(21);
      expect(Math.max(...sizes.slice(1))).toBeGreaterThan(1);
    });
  });
}

/** A log whose appends settle once it holds them (Pulsar): the consumer catches up later. */
function unjudgedCases(open: () => Promise<MessageLog>) {
  describe("without verdicts", () => {
    it("resolves an append once held, and knows its key and conversation until the consumer commits it", async () => {
      const log = await open();
      const { release, handled } = consumeBehindGate(log);
      const conv = newConversationId();
      const event = ev.posted(conv, 2, "ann", "hi", { clientMsgId: "k-held" });
      await log.append(event);
      expect(handled).toEqual([]);
      expect(log.pendingKey(conv, "ann", "k-held")?.eventId).toBe(event.eventId);
      expect(log.pendingKey(conv, "ben", "k-held")).toBeUndefined();
      const one = watch(log.caughtUp(conv));
      const all = watch(log.caughtUp());
      // Another conversation has nothing pending.
      await log.caughtUp(newConversationId());
      await sleep(50);
      expect(one.settled || all.settled).toBe(false);
      release.open();
      await one.promise;
      await all.promise;
      expect(handled).toEqual([event.eventId]);
      expect(log.pendingKey(conv, "ann", "k-held")).toBeUndefined();
    });

    it("hands over again, in order, what the consumer failed to commit or refused", async () => {
      const log = await open();
      const conv = newConversationId();
      const committed: bigint[] = [];
      let calls = 0;
      let refusals = 0;
      log.consume(async (batch) => {
        calls++;
        if (calls === 1) throw new Error("disk on fire");
        return batch.map((e) => {
          // The first time seq 3 comes, refuse it (as a store that lags would).
          if (e.seq === 3n && refusals++ === 0) return new SeqConflictError(conv, 2n, e.seq);
          // What comes again after it was committed is committed, as the store takes it.
          if (committed.includes(e.seq)) return undefined;
          const head = committed.at(-1) ?? 0n;
          if (e.seq !== head + 1n) return new SeqConflictError(conv, head + 1n, e.seq);
          committed.push(e.seq);
          return undefined;
        });
      });
      for (const seq of [1, 2, 3, 4, 5]) {
        await log.append(ev.posted(conv, seq, "ann", `m${seq}`));
      }
      await log.caughtUp(conv);
      expect(committed).toEqual([1n, 2n, 3n, 4n, 5n]);
      expect(calls).toBeGreaterThan(1);
      expect(refusals).toBeGreaterThan(1);
    });

    it("holds appends made before any consumer, for the consumer that registers", async () => {
      const log = await open();
      const conv = newConversationId();
      const events = [1, 2, 3].map((seq) => ev.posted(conv, seq, "ann", `early${seq}`));
      for (const e of events) await log.append(e);
      const handled: string[] = [];
      // As the store takes them (see the order case above).
      log.consume(async (batch) =>
        batch.map((e) => {
          if (e.seq <= BigInt(handled.length)) return undefined;
          if (e.seq !== BigInt(handled.length + 1)) {
            return new SeqConflictError(conv, BigInt(handled.length + 1), e.seq);
          }
          handled.push(e.eventId);
          return undefined;
        }),
      );
      await log.caughtUp();
      expect(handled).toEqual(events.map((e) => e.eventId));
    });
  });
}
