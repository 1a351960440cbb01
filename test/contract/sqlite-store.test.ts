import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { EventSchema } from "../../gen/chat/v1/event_pb.js";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import { indexed } from "../../lib/backends/sqlite/schema.js";
import { openSqliteStore, type SqliteStore } from "../../lib/backends/sqlite/sqlite-store.js";
import { DeviceStateError, DuplicateEventError, SeqConflictError } from "../../lib/errors.js";
import { eventBytes } from "../../lib/event-bytes.js";
import { eventStoreContract } from "./event-store.contract.js";
import { ev, newConversationId, type StoreFactory } from "./fixtures.js";
import { metadataStoreContract } from "./metadata-store.contract.js";

/** A fresh database file per test; reopen closes it and opens the same file again. */
const sqliteFactory: StoreFactory = async () => {
  const dir = mkdtempSync(join(tmpdir(), "chat-contract-"));
  const path = join(dir, "chat.db");
  let store: SqliteStore = openSqliteStore({ path, synchronous: "NORMAL" });
  return {
    get events() {
      return store;
    },
    get metadata() {
      return store;
    },
    async reopen() {
      await store.close();
      store = openSqliteStore({ path, synchronous: "NORMAL" });
      return { events: store, metadata: store };
    },
    async cleanup() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
};

eventStoreContract("sqlite", sqliteFactory);
metadataStoreContract("sqlite", sqliteFactory);

/** user_version once every migration ran. */
const latestVersion = 4;

describe("SQLite store: the writer thread", () => {
  const dirs: string[] = [];
  const stores: SqliteStore[] = [];
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const open = (opts: Partial<Parameters<typeof openSqliteStore>[0]> = {}) => {
    const dir = mkdtempSync(join(tmpdir(), "chat-sqlite-"));
    dirs.push(dir);
    const path = join(dir, "chat.db");
    const store = openSqliteStore({ path, synchronous: "NORMAL", ...opts });
    stores.push(store);
    return { store, path };
  };

  it("migrates a database whose group creations took message keys, once", async () => {
    const { store, path } = open();
    const g = newConversationId();
    await store.commit([ev.group(g, "ann", ["ben"], { clientMsgId: "req" })]);
    await store.close();
    stores.pop();
    // As an older version wrote it.
    const raw = new Database(path);
    raw.prepare("UPDATE events SET client_msg_id = 'req' WHERE kind = 10").run();
    raw.exec("ALTER TABLE events DROP COLUMN redacted");
    raw.exec("ALTER TABLE conversations DROP COLUMN activity_rev");
    raw.pragma("user_version = 0");
    raw.close();
    const reopened = openSqliteStore({ path, synchronous: "NORMAL" });
    stores.push(reopened);
    const verdicts = await reopened.commit([ev.posted(g, 2, "ann", "hi", { clientMsgId: "req" })]);
    expect(verdicts).toEqual([undefined]);
    const check = new Database(path, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(latestVersion);
    check.close();
  });

  it("migrates a database from before deletions were flagged: its deleted messages stop counting as unread", async () => {
    const { store, path } = open();
    const g = newConversationId();
    await store.commit([
      ev.group(g, "ann", ["ben"]),
      ev.posted(g, 2, "ann", "gone"),
      ev.edited(g, 3, "ann", 2, "gone v2"),
      ev.posted(g, 4, "ann", "kept"),
      ev.deleted(g, 5, "ann", 2),
    ]);
    await store.close();
    stores.pop();
    // As an older version wrote it: the deletion redacted the bodies only.
    const raw = new Database(path);
    raw.exec("ALTER TABLE events DROP COLUMN redacted");
    raw.exec("ALTER TABLE conversations DROP COLUMN activity_rev");
    raw.pragma("user_version = 1");
    raw.close();
    const reopened = openSqliteStore({ path, synchronous: "NORMAL" });
    stores.push(reopened);
    expect(await reopened.countUnread(g, "ben", 0n, 100)).toBe(1);
    const check = new Database(path, { readonly: true });
    const flagged = check
      .prepare("SELECT seq FROM events WHERE conversation_id = ? AND redacted = 1 ORDER BY seq")
      .all(g);
    expect(flagged).toEqual([{ seq: 2 }, { seq: 3 }]);
    expect(check.pragma("user_version", { simple: true })).toBe(latestVersion);
    check.close();
  });

  it("migrates a database where devices shared a push token: the last active one keeps it", async () => {
    const { store, path } = open();
    for (const [user, device] of [
      ["ann", "a1"],
      ["ben", "b1"],
      ["cat", "c1"],
    ] as const) {
      await store.ensureDevice(user, device, DevicePlatform.ANDROID);
      await store.updateDevice(user, device, {
        platform: DevicePlatform.ANDROID,
        displayName: "",
        pushToken: `tok-${device}`,
      });
    }
    await store.close();
    stores.pop();
    // As an older version left it: one install's token registered by ann, then by ben.
    const raw = new Database(path);
    raw
      .prepare("UPDATE devices SET push_token = 'shared', last_active_at = ? WHERE device_id = ?")
      .run(1000, "a1");
    raw
      .prepare("UPDATE devices SET push_token = 'shared', last_active_at = ? WHERE device_id = ?")
      .run(2000, "b1");
    raw.pragma("user_version = 3");
    raw.close();
    const reopened = openSqliteStore({ path, synchronous: "NORMAL" });
    stores.push(reopened);
    const tokens = (await reopened.pushTargets(["ann", "ben", "cat"]))
      .map((d) => [d.deviceId, d.pushToken])
      .sort();
    expect(tokens).toEqual([
      ["b1", "shared"],
      ["c1", "tok-c1"],
    ]);
    const check = new Database(path, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(latestVersion);
    check.close();
  });

  it("reads the events about one message, and takes over push tokens, through their indexes", () => {
    const { path } = open();
    const db = new Database(path, { readonly: true });
    try {
      for (const [name, { sql, index }] of Object.entries(indexed)) {
        const plan = db
          .prepare(`EXPLAIN QUERY PLAN ${sql}`)
          .all(
            ...sql
              .split("?")
              .slice(1)
              .map(() => "x"),
          )
          .map((r) => (r as { detail: string }).detail);
        expect(plan, name).toEqual([expect.stringContaining(`USING INDEX ${index} `)]);
      }
    } finally {
      db.close();
    }
  });

  it("keeps a new database private: its directory, file, WAL and shared memory are the owner's alone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chat-sqlite-"));
    dirs.push(dir);
    const path = join(dir, "data", "chat.db");
    const store = openSqliteStore({ path, synchronous: "NORMAL" });
    stores.push(store);
    await store.commit([ev.group(newConversationId(), "ann", ["ben"])]);
    expect(statSync(join(dir, "data")).mode & 0o777).toBe(0o700);
    for (const f of ["chat.db", "chat.db-wal", "chat.db-shm"]) {
      expect(statSync(join(dir, "data", f)).mode & 0o777).toBe(0o600);
    }
  });

  it("commits writes sent together as one batch, where one that fails leaves the others", async () => {
    const { store } = open();
    await store.putUser("ann", "Ann", false);
    await store.ensureDevice("ann", "ann-phone", DevicePlatform.IOS);
    await store.revokeDevice("ann", "ann-phone");
    // Sent in one turn: they reach the writer together and share a transaction.
    const [ben, revoked, cat] = await Promise.allSettled([
      store.putUser("ben", "Ben", false),
      store.ensureDevice("ann", "ann-phone", DevicePlatform.IOS),
      store.putUser("cat", "Cat", false),
    ]);
    expect(ben.status).toBe("fulfilled");
    expect(cat.status).toBe("fulfilled");
    expect(revoked.status).toBe("rejected");
    expect((revoked as PromiseRejectedResult).reason).toBeInstanceOf(DeviceStateError);
    // What resolved is visible to reads on the caller's connection.
    expect((await store.getUsers(["ben", "cat"])).map((u) => u.userId).sort()).toEqual([
      "ben",
      "cat",
    ]);
  });

  it("hands back the bytes it stored, so fan-out sends them without encoding again", async () => {
    const { store } = open();
    const conv = newConversationId();
    const created = ev.group(conv, "ann", ["ben"]);
    const posted = ev.posted(conv, 2, "ann", "hello", { clientMsgId: "m1" });
    expect(await store.commit([created, posted])).toEqual([undefined, undefined]);
    expect(eventBytes(posted)).toEqual(toBinary(EventSchema, posted));
    const read = await store.readEvent(conv, 2n);
    expect(read && toBinary(EventSchema, read)).toEqual(toBinary(EventSchema, posted));
  });

  it("judges seqs by the heads it committed, also after a refused batch", async () => {
    const { store } = open();
    const conv = newConversationId();
    expect(await store.commit([ev.group(conv, "ann", ["ben"])])).toEqual([undefined]);
    const dup = ev.posted(conv, 2, "ann", "a", { clientMsgId: "k" });
    expect(await store.commit([dup])).toEqual([undefined]);
    // A reused key is refused by the unique index and leaves the head where it was.
    const [again, next] = await store.commit([
      ev.posted(conv, 3, "ann", "again", { clientMsgId: "k" }),
      ev.posted(conv, 3, "ben", "b"),
    ]);
    expect(again).toBeInstanceOf(DuplicateEventError);
    expect((again as DuplicateEventError).original.eventId).toBe(dup.eventId);
    expect(next).toBeUndefined();
    expect((await store.getConversation(conv))?.headSeq).toBe(3n);
    const [hole] = await store.commit([ev.posted(conv, 5, "ann", "hole")]);
    expect(hole).toBeInstanceOf(SeqConflictError);
    expect((hole as SeqConflictError).expected).toBe(4n);
  });
});
