import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import { createGroupCommit, type Write } from "../../lib/backends/sqlite/group-commit.js";
import { openDatabase } from "../../lib/backends/sqlite/schema.js";
import { createWrites } from "../../lib/backends/sqlite/writes.js";
import { ev, newConversationId } from "../contract/fixtures.js";

const dirs: string[] = [];
const dbs: Database.Database[] = [];
afterEach(() => {
  for (const db of dbs.splice(0)) db.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function open() {
  const dir = mkdtempSync(join(tmpdir(), "chat-group-commit-"));
  dirs.push(dir);
  const db = openDatabase({ path: join(dir, "chat.db"), synchronous: "NORMAL" }, "writer");
  dbs.push(db);
  return { db, commit: createGroupCommit(db, createWrites(db)) };
}

let nextId = 1;
const write = (events: Event[]): Write => ({ id: nextId++, db: 1, op: "commit", args: [events] });
const stored = (db: Database.Database, conversationId: string) =>
  (
    db
      .prepare("SELECT seq FROM events WHERE conversation_id = ? ORDER BY seq")
      .all(conversationId) as { seq: number }[]
  ).map((r) => Number(r.seq));

describe("group commit", () => {
  it("commits every request of a batch in one transaction; one that throws leaves the others", () => {
    const { db, commit } = open();
    const [a, b] = [newConversationId(), newConversationId()];
    expect(
      commit([write([ev.group(a, "ann", ["ben"])]), write([ev.group(b, "ann", ["ben"])])]),
    ).toMatchObject([{ ok: true }, { ok: true }]);
    const replies = commit([
      write([ev.posted(a, 2, "ann", "x")]),
      { id: nextId++, db: 1, op: "revokeDevice", args: ["ann", "no-such-device"] },
      write([ev.posted(b, 2, "ann", "y")]),
    ]);
    expect(replies.map((r) => r.ok)).toEqual([true, false, true]);
    expect([stored(db, a), stored(db, b)]).toEqual([
      [1, 2],
      [1, 2],
    ]);
  });

  it("fails the whole batch, durably nothing, when an error rolls the transaction back", () => {
    const { db, commit } = open();
    const [a, b, c] = [newConversationId(), newConversationId(), newConversationId()];
    commit([a, b, c].map((id) => write([ev.group(id, "ann", ["ben"])])));
    // A full disk, as SQLite meets it mid-transaction: it then rolls all of it back.
    db.pragma("cache_size = -256");
    db.pragma(`max_page_count = ${(db.pragma("page_count", { simple: true }) as number) + 40}`);
    const big = "z".repeat(4000);
    const replies = commit([
      write([ev.posted(a, 2, "ann", "before")]),
      write(Array.from({ length: 200 }, (_, i) => ev.posted(b, i + 2, "ann", big))),
      write([ev.posted(c, 2, "ann", "after")]),
    ]);
    expect(replies.map((r) => r.ok)).toEqual([false, false, false]);
    expect(db.inTransaction).toBe(false);
    expect([stored(db, a), stored(db, b), stored(db, c)]).toEqual([[1], [1], [1]]);
    // The cached heads were dropped with it: the same seqs commit once there is room.
    db.pragma("max_page_count = 1073741823");
    expect(
      commit([write([ev.posted(a, 2, "ann", "again")]), write([ev.posted(c, 2, "ann", "again")])]),
    ).toMatchObject([{ ok: true, value: [expect.any(Uint8Array)] }, { ok: true }]);
    expect([stored(db, a), stored(db, c)]).toEqual([
      [1, 2],
      [1, 2],
    ]);
  });
});
