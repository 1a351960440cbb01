import type { Worker } from "node:worker_threads";
import { BackendUnavailableError } from "../../errors.js";
import { siblingModule, startThread } from "../../threads.js";
import type { SqliteOptions } from "./schema.js";
import type { WriterReply, WriterRequest } from "./writer-protocol.js";
import { fromWire, type WriteOps } from "./writes.js";

/**
 * Writes to one database, committed by the writer thread. If the thread dies,
 * the writes waiting on it fail (their outcome is unknown: a retry with its
 * key finds the original) and the next write opens the database on a new one
 * (after a pause, if the thread died before answering anything: see
 * writerThread).
 */
export interface DatabaseWriter {
  call<K extends keyof WriteOps>(
    op: K,
    ...args: Parameters<WriteOps[K]>
  ): Promise<ReturnType<WriteOps[K]>>;
  /** Lets this database's queued writes commit, then closes its connection. */
  close(): Promise<void>;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/**
 * The writer thread, shared by every database this process opens: it starts
 * once (loading its modules takes a few hundred milliseconds) and then serves
 * each database on a connection of its own. Requests are numbered and replies
 * matched by id; the thread keeps the process alive only while one is pending.
 */
class WriterThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextDb = 1;
  failure: Error | undefined;
  /** When it failed, and whether it had answered anything before. */
  failedAt = 0;
  served = false;

  constructor() {
    this.worker = startThread(siblingModule(import.meta.url, "writer-thread"));
    this.worker.unref();
    this.worker.on("message", (replies: WriterReply[]) => this.settle(replies));
    this.worker.on("error", (err) =>
      this.failAll(new BackendUnavailableError("sqlite writer failed", { cause: err })),
    );
    this.worker.once("exit", () =>
      this.failAll(new BackendUnavailableError("sqlite writer stopped")),
    );
  }

  /** Opens a database on the thread; writes sent before it has opened wait in order. */
  open(opts: SqliteOptions): Omit<DatabaseWriter, "close"> & { close(): Promise<void> } {
    const db = this.nextDb++;
    const opened = this.request({ db, op: "open", args: [opts] });
    // A failed open shows in the writes sent after it, which fail alike.
    opened.catch(() => undefined);
    let closing: Promise<void> | undefined;
    return {
      call: (op, ...args) => {
        if (closing) return Promise.reject(new BackendUnavailableError("store closed"));
        return this.request({ db, op, args }) as never;
      },
      close: () => {
        closing ??= opened
          .catch(() => undefined)
          .then(() => this.request({ db, op: "close", args: [] }))
          .then(() => undefined);
        return closing;
      },
    };
  }

  private request(r: Omit<WriterRequest, "id">): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.pending.size === 0) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...r, id } as WriterRequest);
    });
  }

  private settle(replies: WriterReply[]) {
    this.served = true;
    for (const r of replies) {
      const p = this.pending.get(r.id);
      if (!p) continue;
      this.pending.delete(r.id);
      if (r.ok) p.resolve(r.value);
      else p.reject(fromWire(r.error));
    }
    if (this.pending.size === 0) this.worker.unref();
  }

  private failAll(err: Error) {
    if (!this.failure) this.failedAt = Date.now();
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }
}

let shared: WriterThread | undefined;
/** Threads in a row that died before answering anything. */
let diedYoung = 0;

/**
 * The process's writer thread; a thread that died is replaced. One that died
 * before answering anything (the database cannot be opened, say) is replaced
 * only after a pause that doubles with each such death, up to 5 s, so a
 * lasting fault costs a failed write rather than a thread start per write.
 */
function writerThread(): WriterThread {
  if (shared?.failure) {
    if (shared.served) diedYoung = 0;
    else {
      const pauseMs = Math.min(5000, 100 * 2 ** diedYoung);
      if (Date.now() - shared.failedAt < pauseMs) {
        throw new BackendUnavailableError("sqlite writer restarting", { cause: shared.failure });
      }
      diedYoung++;
    }
  }
  if (!shared || shared.failure) shared = new WriterThread();
  return shared;
}

/** A writer for the database at `opts.path`, on the process's writer thread. */
export function openWriter(opts: SqliteOptions): DatabaseWriter {
  let thread = writerThread();
  let current = thread.open(opts);
  let closing: Promise<void> | undefined;
  return {
    call: (op, ...args) => {
      if (closing) return Promise.reject(new BackendUnavailableError("store closed"));
      if (thread.failure) {
        try {
          thread = writerThread();
        } catch (err) {
          return Promise.reject(err);
        }
        current = thread.open(opts);
      }
      return current.call(op, ...args);
    },
    close: () => {
      // A dead thread closed its connections as it went.
      closing ??= thread.failure ? Promise.resolve() : current.close();
      return closing;
    },
  };
}
