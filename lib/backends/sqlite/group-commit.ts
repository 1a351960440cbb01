import type Database from "better-sqlite3";
import type { WriterReply, WriterRequest } from "./writer-protocol.js";
import { toWire, type WriteOp, type Writes } from "./writes.js";

export type Write = Extract<WriterRequest, { op: WriteOp }>;

/**
 * Commits a batch of writes, from any number of callers, as one transaction
 * on the writer's connection: one reply per request, in order. Each request
 * runs in its own savepoint, so one that throws leaves the others to commit.
 * When the transaction itself is lost (the commit fails, or an error such as
 * a full disk makes SQLite roll all of it back) every request fails and none
 * of the batch is durable.
 */
export function createGroupCommit(db: Database.Database, writes: Writes) {
  const call = (op: WriteOp, args: unknown[]) =>
    (writes[op] as (...a: unknown[]) => unknown)(...args);
  // Nested inside the batch's transaction: a savepoint.
  const one = db.transaction((r: Write) => call(r.op, r.args));
  const batch = db.transaction((reqs: Write[]) =>
    reqs.map((r): WriterReply => {
      try {
        return { id: r.id, ok: true, value: one(r) };
      } catch (err) {
        writes.forget();
        // Rolled back as a whole: the requests after this one would each
        // commit on their own, outside the batch.
        if (!db.inTransaction) throw err;
        return { id: r.id, ok: false, error: toWire(err) };
      }
    }),
  );
  return (reqs: Write[]): WriterReply[] => {
    try {
      return batch(reqs);
    } catch (err) {
      writes.forget();
      const error = toWire(err);
      return reqs.map((r) => ({ id: r.id, ok: false, error }));
    }
  };
}
