import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import { openSqliteStore, type SqliteStore } from "../../lib/backends/sqlite/sqlite-store.js";
import { BackendUnavailableError } from "../../lib/errors.js";
import { ev, newConversationId } from "../contract/fixtures.js";

const dirs: string[] = [];
const stores: SqliteStore[] = [];
const post = Worker.prototype.postMessage;
afterEach(async () => {
  Worker.prototype.postMessage = post;
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** The worker the next write is posted to: the process's SQLite writer thread. */
function nextWriter(): Promise<Worker> {
  return new Promise((resolve) => {
    Worker.prototype.postMessage = function (
      this: Worker,
      ...args: Parameters<Worker["postMessage"]>
    ) {
      Worker.prototype.postMessage = post;
      resolve(this);
      return post.apply(this, args);
    };
  });
}

describe("SQLite writer thread", () => {
  it("is replaced when it dies: the writes waiting on it fail, later ones commit, nothing committed is lost", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chat-writer-"));
    dirs.push(dir);
    const store = openSqliteStore({ path: join(dir, "chat.db"), synchronous: "NORMAL" });
    stores.push(store);
    const g = newConversationId();
    await store.commit([ev.group(g, "ann", ["ben"]), ev.posted(g, 2, "ann", "kept")]);

    const writer = nextWriter();
    const waiting = store.commit([ev.posted(g, 3, "ann", "in flight")]).catch((e: unknown) => e);
    await (await writer).terminate();
    const outcome = await waiting;
    // It may have committed before the thread went; either way it was not lost silently.
    if (!Array.isArray(outcome)) expect(outcome).toBeInstanceOf(BackendUnavailableError);

    const head = (await store.getConversation(g))!.headSeq;
    expect(head === 2n || head === 3n).toBe(true);
    const after = nextWriter();
    expect(await store.commit([ev.posted(g, head + 1n, "ann", "after")])).toEqual([undefined]);
    expect(await after).not.toBe(await writer);
    const events = await store.readAfter(g, 0n, 10);
    expect(events.map((e) => Number(e.seq))).toEqual(
      Array.from({ length: Number(head) + 1 }, (_, i) => i + 1),
    );
    await store.close();
    stores.pop();
  });

  it("is replaced after a pause when it dies before answering anything, and at once again once one has served", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chat-writer-"));
    dirs.push(dir);
    const store = openSqliteStore({ path: join(dir, "chat.db"), synchronous: "NORMAL" });
    stores.push(store);
    const g = newConversationId();
    await store.commit([ev.group(g, "ann", ["ben"])]);
    // A thread that served dies: the next write starts a new one, which dies before answering.
    const served = nextWriter();
    const lost = store.commit([ev.posted(g, 2, "ann", "a")]).catch((e: unknown) => e);
    await (await served).terminate();
    await lost;
    const young = nextWriter();
    const first = store.commit([ev.posted(g, 2, "ann", "b")]).catch((e: unknown) => e);
    await (await young).terminate();
    expect(await first).toBeInstanceOf(BackendUnavailableError);
    // Within the pause no thread starts: the write fails at once.
    let started = false;
    void nextWriter().then(() => {
      started = true;
    });
    const paused = await store.commit([ev.posted(g, 2, "ann", "c")]).catch((e: unknown) => e);
    expect(paused).toBeInstanceOf(BackendUnavailableError);
    expect((paused as Error).message).toBe("sqlite writer restarting");
    expect(started).toBe(false);
    // After it, a new thread serves, and the head is where the failed writes left it.
    await new Promise((r) => setTimeout(r, 150));
    const head = (await store.getConversation(g))!.headSeq;
    expect(await store.commit([ev.posted(g, head + 1n, "ann", "d")])).toEqual([undefined]);
    expect(started).toBe(true);
  });
});
