/**
 * The SQLite writer thread: for each database, the one connection that
 * writes. Requests that arrive while a transaction commits, or within
 * `minCommitGapMs` of the last commit, wait and then commit together, one
 * fsync for all of them (group commit), so no caller's event loop ever blocks
 * on the disk.
 */
import { parentPort } from "node:worker_threads";
import type Database from "better-sqlite3";
import { createGroupCommit, type Write } from "./group-commit.js";
import { openDatabase } from "./schema.js";
import type { WriterReply, WriterRequest } from "./writer-protocol.js";
import { createWrites, toWire, type WireError } from "./writes.js";

interface Open {
  db: Database.Database;
  commit(reqs: Write[]): WriterReply[];
}

const port = parentPort;
if (!port) throw new Error("writer-thread runs as a worker thread");

const open = new Map<number, Open>();
let queue: WriterRequest[] = [];
let scheduled = false;

function openOne(req: Extract<WriterRequest, { op: "open" }>): Open {
  const db = openDatabase(req.args[0], "writer");
  return { db, commit: createGroupCommit(db, createWrites(db)) };
}

const failed = (id: number, error: WireError): WriterReply => ({ id, ok: false, error });

/**
 * Runs everything queued: per database, in arrival order, consecutive writes
 * in one transaction (opening and closing are barriers between them).
 */
function flush() {
  scheduled = false;
  const byDb = new Map<number, WriterRequest[]>();
  for (const r of queue) {
    const list = byDb.get(r.db);
    if (list) list.push(r);
    else byDb.set(r.db, [r]);
  }
  queue = [];
  const replies: WriterReply[] = [];
  for (const [dbId, reqs] of byDb) {
    let run: Write[] = [];
    const commitRun = () => {
      if (run.length === 0) return;
      const target = open.get(dbId);
      if (target) replies.push(...target.commit(run));
      else for (const r of run) replies.push(failed(r.id, notOpen));
      run = [];
    };
    for (const r of reqs) {
      if (r.op !== "open" && r.op !== "close") {
        run.push(r);
        continue;
      }
      commitRun();
      try {
        if (r.op === "open") {
          open.set(dbId, openOne(r));
        } else {
          open.get(dbId)?.db.close();
          open.delete(dbId);
        }
        replies.push({ id: r.id, ok: true, value: undefined });
      } catch (err) {
        replies.push(failed(r.id, toWire(err)));
      }
    }
    commitRun();
  }
  port?.postMessage(replies);
}

const notOpen: WireError = { name: "BackendUnavailableError", message: "database is not open" };

/**
 * The least time between the starts of two commits. A commit writes every
 * page it touched to the WAL (about five B-tree pages per event, two
 * syscalls each), so events that share a commit share pages and the fsync.
 * Only writes arriving within this long of the last commit wait; a lone
 * write commits at once.
 */
const minCommitGapMs = 2;
let lastCommitAt = -Infinity;

const commitQueued = () => {
  lastCommitAt = performance.now();
  flush();
};

port.on("message", (m: WriterRequest) => {
  queue.push(m);
  if (!scheduled) {
    scheduled = true;
    // After every message already waiting has been queued: they form one batch.
    const wait = lastCommitAt + minCommitGapMs - performance.now();
    if (wait >= 1) setTimeout(commitQueued, wait);
    else setImmediate(commitQueued);
  }
});
