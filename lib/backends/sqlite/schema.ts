import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { kindNumber } from "../records.js";

const schema = `
CREATE TABLE IF NOT EXISTS users (
  user_id TEXT PRIMARY KEY,
  display_name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  platform INTEGER NOT NULL DEFAULT 0,
  display_name TEXT NOT NULL DEFAULT '',
  push_token TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  last_active_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_user ON devices(user_id);
CREATE INDEX IF NOT EXISTS devices_by_push_token ON devices(push_token) WHERE push_token <> '';
CREATE TABLE IF NOT EXISTS conversations (
  conversation_id TEXT PRIMARY KEY,
  kind INTEGER NOT NULL,
  title TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  head_seq INTEGER NOT NULL,
  last_activity_at INTEGER NOT NULL,
  member_count INTEGER NOT NULL,
  direct_key TEXT UNIQUE,
  request_key TEXT UNIQUE,
  activity_rev INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
  conversation_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  role INTEGER NOT NULL,
  joined_seq INTEGER NOT NULL,
  joined_at INTEGER NOT NULL,
  left_seq INTEGER,
  delivered_seq INTEGER NOT NULL DEFAULT 0,
  read_seq INTEGER NOT NULL DEFAULT 0,
  receipt_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user_id, conversation_id);
CREATE TABLE IF NOT EXISTS events (
  conversation_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  actor_user_id TEXT NOT NULL,
  client_msg_id TEXT,
  target_seq INTEGER,
  body BLOB NOT NULL,
  redacted INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_dedup
  ON events(conversation_id, actor_user_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_target
  ON events(conversation_id, target_seq) WHERE target_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS device_cursors (
  device_id TEXT NOT NULL,
  conversation_id TEXT NOT NULL,
  delivered_seq INTEGER NOT NULL,
  PRIMARY KEY (device_id, conversation_id)
) WITHOUT ROWID;
`;

/**
 * Statements whose index the planner would pass over, each with the index it
 * must use (a test checks their plans). Without statistics it prefers the
 * events' primary key prefix (the whole conversation) to events_by_target,
 * and it uses a partial index only when the statement itself implies the
 * index's condition.
 */
export const indexed = {
  /** The edits of one message. */
  edits: {
    index: "events_by_target",
    sql: `SELECT seq, body FROM events INDEXED BY events_by_target
      WHERE conversation_id = ? AND target_seq = ? AND kind = ${kindNumber.messageEdited}`,
  },
  /** One user's reactions on one message. */
  reactions: {
    index: "events_by_target",
    sql: `SELECT body FROM events INDEXED BY events_by_target
      WHERE conversation_id = ? AND target_seq = ? AND actor_user_id = ?
      AND kind IN (${kindNumber.reactionAdded}, ${kindNumber.reactionRemoved}) ORDER BY seq`,
  },
  /** A push token taken over by another device: `<> ''` lets the partial index apply. */
  takePushToken: {
    index: "devices_by_push_token",
    sql: "UPDATE devices SET push_token = '' WHERE push_token = ? AND push_token <> '' AND device_id <> ?",
  },
};

/** Steps that bring a database written by an older version up to this schema, by user_version. */
const migrations: string[] = [
  // Group request ids left the events' idempotency keys: they collided with the creator's message keys.
  "UPDATE events SET client_msg_id = NULL WHERE kind = 10 AND client_msg_id IS NOT NULL",
  // Unread counts skip deleted messages by a flag; the deletions' targets say which they are.
  `ALTER TABLE events ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;
   UPDATE events SET redacted = 1 WHERE (conversation_id, seq) IN
     (SELECT conversation_id, target_seq FROM events WHERE kind = 13);
   UPDATE events SET redacted = 1 WHERE kind = 12 AND (conversation_id, target_seq) IN
     (SELECT conversation_id, target_seq FROM events WHERE kind = 13)`,
  // Lists page by last activity; a commit counter tells what moved while a client paged.
  "ALTER TABLE conversations ADD COLUMN activity_rev INTEGER NOT NULL DEFAULT 0",
  // A push token belongs to one device: of devices sharing one, the last active keeps it.
  `UPDATE devices SET push_token = '' WHERE push_token <> '' AND EXISTS
     (SELECT 1 FROM devices d WHERE d.push_token = devices.push_token AND d.device_id <> devices.device_id
        AND (d.last_active_at > devices.last_active_at
             OR (d.last_active_at = devices.last_active_at AND d.device_id > devices.device_id)))`,
];

/**
 * Creates the schema; a database created by it is stamped as already
 * migrated, since the schema is the migrations' end state.
 */
function create(db: Database.Database) {
  db.transaction(() => {
    const existing = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'events'").get();
    db.exec(schema);
    if (!existing) db.pragma(`user_version = ${migrations.length}`);
  })();
}

function migrate(db: Database.Database) {
  const version = db.pragma("user_version", { simple: true }) as number;
  for (const [i, step] of migrations.entries()) {
    if (i < version) continue;
    db.transaction(() => {
      db.exec(step);
      db.pragma(`user_version = ${i + 1}`);
    })();
  }
}

/** The database file and how it is written. */
export interface SqliteOptions {
  path: string;
  /** FULL (default): every commit is fsync'd before it resolves. */
  synchronous?: "FULL" | "NORMAL";
}

/**
 * Opens (and on first use creates) the database in WAL mode, so one writer
 * and any number of readers work side by side, each reader on the last
 * committed state. The writer also checkpoints, after a commit that grew the
 * WAL past 10,000 pages.
 */
export function openDatabase(opts: SqliteOptions, role: "reader" | "writer"): Database.Database {
  if (opts.path !== ":memory:") {
    // Messages are private: a new directory and database are the owner's alone.
    // SQLite gives the WAL and shared-memory files the database file's mode.
    mkdirSync(dirname(opts.path), { recursive: true, mode: 0o700 });
    closeSync(openSync(opts.path, "a", 0o600));
  }
  const db = new Database(opts.path);
  db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${opts.synchronous ?? "FULL"}`);
  db.pragma("busy_timeout = 5000");
  // Checkpoint every ~40 MB of WAL instead of SQLite's 4 MB: a page that many
  // commits rewrote is copied into the database once (a fifth less writer CPU).
  if (role === "writer") db.pragma("wal_autocheckpoint = 10000");
  // Statement journals (one per savepoint of a batch) stay off the disk.
  db.pragma("temp_store = MEMORY");
  create(db);
  // Whichever connection opens first migrates, before it prepares a statement
  // that needs the new schema (the store's reader opens before its writer).
  migrate(db);
  // A reader that tried to write would contend with the writer for the lock.
  if (role === "reader") db.pragma("query_only = 1");
  return db;
}
