import type { Event } from "../../../gen/chat/v1/event_pb.js";
import { BackendUnavailableError } from "../../errors.js";
import type { MessageLog } from "../message-log.js";

interface Pending {
  event: Event;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The embedded message log. Nothing is kept here once acknowledged: an
 * append settles only after the consumer (the store) has committed the event,
 * so "durable" means "committed to SQLite". Appends made in one turn of the
 * event loop go to the consumer as one batch; up to `maxInFlight` batches are
 * handed over before the first is done, so a batch never waits for the
 * previous one's reply (the store's writer commits what it has queued
 * together, in order, so the cap bounds memory rather than batching).
 */
export function createInProcessLog(
  opts: { maxBatch?: number; maxInFlight?: number } = {},
): MessageLog {
  const maxBatch = opts.maxBatch ?? 512;
  const maxInFlight = opts.maxInFlight ?? 32;
  let queue: Pending[] = [];
  let handler: ((batch: Event[]) => Promise<(Error | undefined)[]>) | undefined;
  let scheduled = false;
  let inFlight = 0;
  let closed = false;

  const schedule = () => {
    if (scheduled || !handler || queue.length === 0 || inFlight >= maxInFlight) return;
    scheduled = true;
    setImmediate(drain);
  };

  const drain = () => {
    scheduled = false;
    while (queue.length > 0 && handler && !closed && inFlight < maxInFlight) {
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch);
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch);
      inFlight++;
      void consume(handler, batch);
    }
  };

  const consume = async (
    h: (batch: Event[]) => Promise<(Error | undefined)[]>,
    batch: Pending[],
  ) => {
    try {
      const verdicts = await h(batch.map((p) => p.event));
      batch.forEach((p, i) => {
        const v = verdicts[i];
        if (v) p.reject(v);
        else p.resolve();
      });
    } catch (err) {
      const e = new BackendUnavailableError("commit failed", { cause: err });
      for (const p of batch) p.reject(e);
    } finally {
      inFlight--;
      schedule();
    }
  };

  return {
    judges: true,
    caughtUp: async () => {},
    pendingKey: () => undefined,
    append(event) {
      if (closed) return Promise.reject(new BackendUnavailableError("log closed"));
      return new Promise<void>((resolve, reject) => {
        queue.push({ event, resolve, reject });
        schedule();
      });
    },
    consume(h) {
      handler = h;
      schedule();
    },
    async close() {
      closed = true;
      const e = new BackendUnavailableError("log closed");
      for (const p of queue) p.reject(e);
      queue = [];
    },
  };
}
