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
 * so "durable" means "committed to SQLite". Appends that arrive while a batch
 * is committing form the next batch (group commit).
 */
export function createInProcessLog(opts: { maxBatch?: number } = {}): MessageLog {
  const maxBatch = opts.maxBatch ?? 512;
  let queue: Pending[] = [];
  let handler: ((batch: Event[]) => Promise<(Error | undefined)[]>) | undefined;
  let draining = false;
  let closed = false;

  const schedule = () => {
    if (draining || !handler || queue.length === 0) return;
    draining = true;
    setImmediate(drain);
  };

  const drain = async () => {
    while (queue.length > 0 && handler && !closed) {
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch);
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch);
      try {
        const verdicts = await handler(batch.map((p) => p.event));
        batch.forEach((p, i) => {
          const v = verdicts[i];
          if (v) p.reject(v);
          else p.resolve();
        });
      } catch (err) {
        const e = new BackendUnavailableError("commit failed", { cause: err });
        for (const p of batch) p.reject(e);
      }
    }
    draining = false;
  };

  return {
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
