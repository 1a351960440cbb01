import { fail } from "./errors.js";

const externalId = /^[A-Za-z0-9_.@:-]{1,128}$/;
const clientKey = /^[A-Za-z0-9_.:-]{1,64}$/;
const serverId = /^[a-z]_[0-9a-z]{26}$/;

/** User and device ids are chosen by partners: 1-128 chars of [A-Za-z0-9_.@:-]. */
export function checkExternalId(field: string, value: string): string {
  if (!externalId.test(value)) {
    throw fail.invalid(`${field} must be 1-128 characters of [A-Za-z0-9_.@:-]`);
  }
  return value;
}

/** Conversation ids are minted by the server (see newId). */
export function checkConversationId(value: string, field = "conversation_id"): string {
  if (!serverId.test(value) || !value.startsWith("c_")) {
    throw fail.invalid(`${field} is not a conversation id`);
  }
  return value;
}

/** Idempotency keys: 1-64 chars of [A-Za-z0-9_.:-]; empty allowed when optional. */
export function checkClientKey(field: string, value: string, required: boolean): string {
  if (value === "" && !required) return value;
  if (!clientKey.test(value)) {
    throw fail.invalid(`${field} must be 1-64 characters of [A-Za-z0-9_.:-]`);
  }
  return value;
}

const utf8 = new TextEncoder();

/** Counts UTF-8 bytes without allocating for short ASCII strings. */
export function utf8Length(s: string): number {
  // Cheap upper bound first: each UTF-16 unit is at most 3 UTF-8 bytes.
  if (s.length * 3 <= 256) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff) {
        n += 4;
        i++;
      } else n += 3;
    }
    return n;
  }
  return utf8.encode(s).length;
}

/**
 * Text must be well-formed Unicode (no lone surrogates, which cannot be
 * encoded as UTF-8) and not contain NUL.
 */
export function checkText(field: string, value: string, opts: { min: number; maxBytes: number }) {
  if (value.length < opts.min) throw fail.invalid(`${field} is required`);
  if (!value.isWellFormed()) throw fail.invalid(`${field} is not valid UTF-8`);
  if (value.includes("\u0000")) throw fail.invalid(`${field} must not contain NUL`);
  if (utf8Length(value) > opts.maxBytes) {
    throw fail.invalid(`${field} exceeds ${opts.maxBytes} bytes`);
  }
  return value;
}

/** A non-empty title or display name of at most `max` characters, without control characters. */
export function checkName(field: string, value: string, max: number): string {
  const trimmed = value.trim();
  if (trimmed.length === 0) throw fail.invalid(`${field} is required`);
  if ([...trimmed].length > max) throw fail.invalid(`${field} exceeds ${max} characters`);
  if (!trimmed.isWellFormed() || /\p{Cc}/u.test(trimmed)) {
    throw fail.invalid(`${field} contains invalid characters`);
  }
  return trimmed;
}

/** An emoji reaction: one short run of non-space characters. */
export function checkEmoji(value: string): string {
  if (value.length === 0) throw fail.invalid("emoji is required");
  if (!value.isWellFormed() || /[\s\p{Cc}]/u.test(value) || utf8Length(value) > 32) {
    throw fail.invalid("emoji must be one emoji of at most 32 bytes");
  }
  return value;
}

/** Deduplicates and validates a list of user ids, bounded by `max`. */
export function checkUserIds(field: string, values: string[], max: number): string[] {
  // Counted once deduplicated: a repeated id is one member. The frame size bounds the list.
  const set = new Set<string>();
  for (const v of values) set.add(checkExternalId(field, v));
  if (set.size > max) throw fail.exhausted(`${field} has more than ${max} entries`);
  return [...set];
}

/** Clamps a page size: 0 means the default. */
export function pageSize(field: string, value: number, def: number, max: number): number {
  if (value === 0) return def;
  if (value > max) throw fail.invalid(`${field} must be at most ${max}`);
  return value;
}
