import type { SqliteOptions } from "./schema.js";
import type { WireError, WriteOp } from "./writes.js";

/**
 * One request to the writer thread, for the database it opened as `db`:
 * open it, one write, or close it once its earlier writes have committed.
 */
export type WriterRequest =
  | { id: number; db: number; op: "open"; args: [SqliteOptions] }
  | { id: number; db: number; op: "close"; args: [] }
  | { id: number; db: number; op: WriteOp; args: unknown[] };

/** The outcome of one request, sent back once its transaction has committed. */
export type WriterReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: WireError };
