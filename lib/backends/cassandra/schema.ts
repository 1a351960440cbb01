/**
 * The CQL schema. Every table is keyed so that each read the stores make is
 * one partition (or, for events, one per bucket it spans): events by
 * conversation and bucket clustered by seq, and the lookups
 * SQL would answer with an index kept as tables of their own, written with
 * the row they point at.
 */
export const tables = [
  // The log of each conversation, in partitions of a fixed run of seqs (its buckets), so a
  // long conversation is many bounded partitions. An event is inserted IF NOT EXISTS, so a seq
  // is taken once.
  `CREATE TABLE IF NOT EXISTS event_buckets (
    conversation_id text, bucket bigint, seq bigint, event_id text, kind int,
    actor_user_id text, client_msg_id text, target_seq bigint, body blob, redacted boolean,
    PRIMARY KEY ((conversation_id, bucket), seq))`,
  // Idempotency keys: (sender, client_msg_id) -> the seq of the original, taken IF NOT EXISTS.
  `CREATE TABLE IF NOT EXISTS event_keys (
    conversation_id text, actor_user_id text, client_msg_id text, seq bigint,
    PRIMARY KEY ((conversation_id), actor_user_id, client_msg_id))`,
  // Edits by the message they edit, so a deletion redacts them too.
  `CREATE TABLE IF NOT EXISTS edits (
    conversation_id text, target_seq bigint, seq bigint,
    PRIMARY KEY ((conversation_id), target_seq, seq))`,
  // Reactions by the message and the user, so a change is checked against the user's last one.
  `CREATE TABLE IF NOT EXISTS reactions (
    conversation_id text, target_seq bigint, actor_user_id text, seq bigint,
    PRIMARY KEY ((conversation_id), target_seq, actor_user_id, seq))`,
  `CREATE TABLE IF NOT EXISTS conversations (
    conversation_id text PRIMARY KEY, kind int, title text, created_by text, created_at bigint,
    head_seq bigint, last_activity_at bigint, member_count int, activity_rev bigint)`,
  // "direct <a> <b>" and "request <creator> <id>": one conversation each, taken IF NOT EXISTS.
  `CREATE TABLE IF NOT EXISTS conversation_keys (key text PRIMARY KEY, conversation_id text)`,
  `CREATE TABLE IF NOT EXISTS members (
    conversation_id text, user_id text, role int, joined_seq bigint, joined_at bigint,
    left_seq bigint, delivered_seq bigint, read_seq bigint, receipt_at bigint,
    PRIMARY KEY ((conversation_id), user_id))`,
  // A user's conversations, also those they left (left_seq set), for lists, sync and peers.
  `CREATE TABLE IF NOT EXISTS user_conversations (
    user_id text, conversation_id text, left_seq bigint,
    PRIMARY KEY ((user_id), conversation_id))`,
  `CREATE TABLE IF NOT EXISTS device_cursors (
    device_id text, conversation_id text, delivered_seq bigint,
    PRIMARY KEY ((device_id), conversation_id))`,
  `CREATE TABLE IF NOT EXISTS users (
    user_id text PRIMARY KEY, display_name text, created_at bigint, updated_at bigint)`,
  `CREATE TABLE IF NOT EXISTS devices (
    device_id text PRIMARY KEY, user_id text, platform int, display_name text, push_token text,
    created_at bigint, last_active_at bigint, revoked_at bigint)`,
  `CREATE TABLE IF NOT EXISTS user_devices (user_id text, device_id text, PRIMARY KEY ((user_id), device_id))`,
  `CREATE TABLE IF NOT EXISTS push_tokens (push_token text, device_id text, PRIMARY KEY ((push_token), device_id))`,
];

/** Events per bucket of event_buckets, unless a store is opened with another size. */
export const defaultBucketSize = 10_000;

/** The log's table before it had buckets: a keyspace that has it is carried over (see migrate). */
export const unbucketedEvents = "events";

/** Table names, in the order created (tests empty them between cases). */
export const tableNames = tables.map((t) => /EXISTS (\w+)/.exec(t)![1]!);
