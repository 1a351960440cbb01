import { Buffer } from "node:buffer";
import { fromBinary, toBinary, type UnknownField } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type Event,
  EventSchema,
  type MessageContent,
  type MessagePosted,
} from "../gen/chat/v1/event_pb.js";
import { notPlain, PlainReader } from "./plain-reader.js";

// Keyed by the event object: one event is stored, acked and fanned out to
// many streams by reference, and each of those needs the same bytes.
const cache = new WeakMap<Event, Uint8Array>();

/**
 * The binary encoding of an event, computed once per event object. Events are
 * read-only once built or decoded, so the bytes stay valid for its lifetime.
 */
export function eventBytes(event: Event): Uint8Array {
  let bytes = cache.get(event);
  if (!bytes) {
    bytes = encodeEvent(event);
    cache.set(event, bytes);
  }
  return bytes;
}

/**
 * Decodes an event, exactly as fromBinary does (the common kinds by hand, see
 * decodePlainEvent), and remembers the bytes it came from, so writing it out
 * again costs nothing. Only for events that are not modified afterwards.
 */
export function decodeEvent(bytes: Uint8Array): Event {
  const event = decodePlainEvent(bytes) ?? fromBinary(EventSchema, bytes);
  cache.set(event, bytes);
  return event;
}

/**
 * Records the encoding of an event that was encoded elsewhere (the SQLite
 * writer thread encodes what it stores). The bytes must be exactly
 * toBinary(EventSchema, event).
 */
export function rememberEventBytes(event: Event, bytes: Uint8Array): void {
  cache.set(event, bytes);
}

/**
 * The seq of a stored event, read from its encoding without decoding the
 * rest (0n if it has none). Throws on malformed bytes, as fromBinary would.
 */
export function storedEventSeq(bytes: Uint8Array): bigint {
  const r = new BinaryReader(bytes);
  let seq = 0n;
  while (r.pos < r.len) {
    const [no, wireType] = r.tag();
    if (no === evSeq && wireType === WireType.Varint) seq = BigInt(r.uint64());
    else r.skip(wireType, no);
  }
  return seq;
}

/**
 * A repeated Event field as unknown fields that hold the events' encodings
 * (eventBytes of each, or the bytes they were stored as): toBinary writes
 * unknown fields verbatim after the known ones, and a decoder that knows the
 * field reads them as its elements, in order. A page of stored events is then
 * written out as it was stored instead of field by field. Binary encodings
 * only: JSON has no unknown fields.
 */
export function storedEventFields(fieldNo: number, encoded: readonly Uint8Array[]): UnknownField[] {
  let size = 0;
  for (const b of encoded) size += varintSize(b.length) + b.length;
  // One buffer for the page: each field's data is its length prefix and the event's bytes.
  const out = new Uint8Array(size);
  const fields: UnknownField[] = [];
  let pos = 0;
  for (const b of encoded) {
    const start = pos;
    pos = putVarint(out, pos, b.length);
    out.set(b, pos);
    pos += b.length;
    fields.push({
      no: fieldNo,
      wireType: WireType.LengthDelimited,
      data: out.subarray(start, pos),
    });
  }
  return fields;
}

// Field numbers from chat/v1/event.proto and google/protobuf/timestamp.proto.
const evConversationId = 1;
const evSeq = 2;
const evEventId = 3;
const evActorUserId = 4;
const evActorDeviceId = 5;
const evClientMsgId = 6;
const evCreatedAt = 7;
const evRedacted = 8;
const evConversationCreated = 10;
const evMessagePosted = 11;
const evMembersAdded = 16;
const createdKind = 1;
const createdTitle = 2;
const createdMembers = 3;
const addedUsers = 1;
const addedRole = 2;
const postedContent = 1;
const postedKind = 2;
const contentText = 1;
const contentReplyTo = 2;
const tsSeconds = 1;
const tsNanos = 2;

const lengthDelimited = 2;
const varintType = 0;

/** Whether a message carries fields this build does not know (hand encoders must not drop them). */
export const hasUnknown = (m: { $unknown?: unknown[] | undefined } | undefined) =>
  (m?.$unknown?.length ?? 0) > 0;

/** Bytes of a varint of a non-negative safe integer. */
function varintSize(v: number): number {
  let size = 1;
  while (v > 0x7f) {
    v = Math.floor(v / 128);
    size++;
  }
  return size;
}

/** Writes a non-negative safe integer as a varint at `pos`; returns the next position. */
function putVarint(out: Uint8Array, pos: number, v: number): number {
  while (v > 0x7f) {
    out[pos++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  out[pos++] = v;
  return pos;
}

/** Size of a length-delimited field (one-byte tag) holding `len` bytes; 0 for an empty string. */
const stringFieldSize = (len: number) => (len === 0 ? 0 : 1 + varintSize(len) + len);

/** Writes a non-empty string field; returns the next position. */
function putString(buf: Buffer, pos: number, field: number, v: string, len: number): number {
  if (len === 0) return pos;
  buf[pos++] = (field << 3) | lengthDelimited;
  pos = putVarint(buf, pos, len);
  return pos + buf.write(v, pos, len, "utf8");
}

const maxSafe = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * The binary encoding of an event, byte for byte as
 * toBinary(EventSchema, event): posted messages without attachments (what
 * nearly every send is) are laid out by hand, several times faster than the
 * reflective encoder; every other event, and any value past 2^53, goes
 * through toBinary.
 */
export function encodeEvent(event: Event): Uint8Array {
  const k = event.kind;
  const ts = event.createdAt;
  if (
    k.case !== "messagePosted" ||
    hasUnknown(event) ||
    hasUnknown(k.value) ||
    hasUnknown(k.value.content) ||
    (k.value.content?.attachments.length ?? 0) > 0 ||
    hasUnknown(ts) ||
    event.seq > maxSafe ||
    (k.value.content?.replyToSeq ?? 0n) > maxSafe ||
    k.value.messageKind < 0 ||
    (ts !== undefined && (ts.seconds < 0n || ts.seconds > maxSafe || ts.nanos < 0))
  ) {
    return toBinary(EventSchema, event);
  }
  const posted = k.value;
  const content = posted.content;
  const seq = Number(event.seq);
  const convLen = Buffer.byteLength(event.conversationId);
  const idLen = Buffer.byteLength(event.eventId);
  const actorLen = Buffer.byteLength(event.actorUserId);
  const deviceLen = Buffer.byteLength(event.actorDeviceId);
  const clientLen = Buffer.byteLength(event.clientMsgId);
  let size =
    stringFieldSize(convLen) +
    stringFieldSize(idLen) +
    stringFieldSize(actorLen) +
    stringFieldSize(deviceLen) +
    stringFieldSize(clientLen);
  if (seq !== 0) size += 1 + varintSize(seq);
  const seconds = ts ? Number(ts.seconds) : 0;
  let tsLen = 0;
  if (ts) {
    if (seconds !== 0) tsLen += 1 + varintSize(seconds);
    if (ts.nanos !== 0) tsLen += 1 + varintSize(ts.nanos);
    size += 1 + varintSize(tsLen) + tsLen;
  }
  if (event.redacted) size += 2;
  const textLen = content ? Buffer.byteLength(content.text) : 0;
  const replyTo = content ? Number(content.replyToSeq) : 0;
  const contentLen = stringFieldSize(textLen) + (replyTo !== 0 ? 1 + varintSize(replyTo) : 0);
  let postedLen = 0;
  if (content) postedLen += 1 + varintSize(contentLen) + contentLen;
  if (posted.messageKind !== 0) postedLen += 1 + varintSize(posted.messageKind);
  size += 1 + varintSize(postedLen) + postedLen;

  // Every byte is written below (the size is exact), so no zero-fill; the
  // buffer is not pooled, so it holds only this event when it is cloned.
  const buf = Buffer.allocUnsafeSlow(size);
  const out = new Uint8Array(buf.buffer, buf.byteOffset, size);
  let pos = putString(buf, 0, evConversationId, event.conversationId, convLen);
  if (seq !== 0) {
    out[pos++] = (evSeq << 3) | varintType;
    pos = putVarint(out, pos, seq);
  }
  pos = putString(buf, pos, evEventId, event.eventId, idLen);
  pos = putString(buf, pos, evActorUserId, event.actorUserId, actorLen);
  pos = putString(buf, pos, evActorDeviceId, event.actorDeviceId, deviceLen);
  pos = putString(buf, pos, evClientMsgId, event.clientMsgId, clientLen);
  if (ts) {
    out[pos++] = (evCreatedAt << 3) | lengthDelimited;
    pos = putVarint(out, pos, tsLen);
    if (seconds !== 0) {
      out[pos++] = (tsSeconds << 3) | varintType;
      pos = putVarint(out, pos, seconds);
    }
    if (ts.nanos !== 0) {
      out[pos++] = (tsNanos << 3) | varintType;
      pos = putVarint(out, pos, ts.nanos);
    }
  }
  if (event.redacted) {
    out[pos++] = (evRedacted << 3) | varintType;
    out[pos++] = 1;
  }
  out[pos++] = (evMessagePosted << 3) | lengthDelimited;
  pos = putVarint(out, pos, postedLen);
  if (content) {
    out[pos++] = (postedContent << 3) | lengthDelimited;
    pos = putVarint(out, pos, contentLen);
    pos = putString(buf, pos, contentText, content.text, textLen);
    if (replyTo !== 0) {
      out[pos++] = (contentReplyTo << 3) | varintType;
      pos = putVarint(out, pos, replyTo);
    }
  }
  if (posted.messageKind !== 0) {
    out[pos++] = (postedKind << 3) | varintType;
    putVarint(out, pos, posted.messageKind);
  }
  return out;
}

const r = new PlainReader();

/**
 * The fast path of decodeEvent: a posted message without attachments (what
 * nearly every stored event is, and what history and sync read by the
 * thousand), a conversation's creation or members added (whose lists of user
 * ids cost fromBinary about a microsecond each), read field by field into the
 * same objects fromBinary builds. Undefined for anything else (another kind,
 * an attachment, an unknown or repeated field, a negative time, invalid
 * UTF-8, malformed bytes), which is fromBinary's to decode or to reject.
 */
export function decodePlainEvent(bytes: Uint8Array): Event | undefined {
  return r.attempt(bytes, plainEvent);
}

/**
 * Reads a MessageContent of text and reply-to (no attachments) that ends at
 * `end`; throws notPlain for anything else. Shared with the decoder of
 * clients' send frames.
 */
export function readPlainContent(reader: PlainReader, end: number): MessageContent {
  let text = "";
  let replyToSeq = 0n;
  let seen = 0;
  while (reader.pos < end) {
    const tag = reader.uint32(end);
    if (tag === ((contentReplyTo << 3) | WireType.Varint) && !(seen & (1 << contentReplyTo))) {
      seen |= 1 << contentReplyTo;
      replyToSeq = reader.uint64(end);
    } else if (reader.field(tag, WireType.LengthDelimited, seen) === contentText) {
      seen |= 1 << contentText;
      text = reader.string(end);
    } else throw notPlain;
  }
  return { $typeName: "chat.v1.MessageContent", text, replyToSeq, attachments: [] };
}

/** A varint that fromBinary reads as an int32 holding a non-negative value (enums, nanos). */
function nonNegativeInt32(end: number): number {
  const v = r.uint32(end);
  if (v > 0x7fffffff) throw notPlain;
  return v;
}

function plainTimestamp(end: number): Timestamp {
  let seconds = 0n;
  let nanos = 0;
  let seen = 0;
  while (r.pos < end) {
    const no = r.field(r.uint32(end), WireType.Varint, seen);
    seen |= 1 << no;
    if (no === tsSeconds) {
      seconds = r.uint64(end);
      // An int64 past 2^63 is negative; fromBinary's to read.
      if (seconds > 0x7fffffffffffffffn) throw notPlain;
    } else if (no === tsNanos) nanos = nonNegativeInt32(end);
    else throw notPlain;
  }
  return { $typeName: "google.protobuf.Timestamp", seconds, nanos };
}

/**
 * A message of an int32 enum field, an optional string field and a repeated
 * string field `listNo` (each at most once but the list): the shape of the
 * kinds that carry user ids.
 */
function plainIdsKind(
  end: number,
  enumNo: number,
  stringNo: number | undefined,
  listNo: number,
): { num: number; str: string; list: string[] } {
  let num = 0;
  let str = "";
  const list: string[] = [];
  let seen = 0;
  while (r.pos < end) {
    const tag = r.uint32(end);
    if (tag === ((listNo << 3) | WireType.LengthDelimited)) {
      list.push(r.string(end));
      continue;
    }
    // Any other wire type fails the check as length-delimited.
    const varint = (tag & 7) === WireType.Varint;
    const no = r.field(tag, varint ? WireType.Varint : WireType.LengthDelimited, seen);
    seen |= 1 << no;
    if (varint && no === enumNo) num = nonNegativeInt32(end);
    else if (!varint && no === stringNo) str = r.string(end);
    else throw notPlain;
  }
  return { num, str, list };
}

function plainPosted(end: number): MessagePosted {
  let content: MessageContent | undefined;
  let messageKind = 0;
  let seen = 0;
  while (r.pos < end) {
    const t = r.uint32(end);
    if (t === ((postedKind << 3) | WireType.Varint) && !(seen & (1 << postedKind))) {
      seen |= 1 << postedKind;
      messageKind = nonNegativeInt32(end);
    } else if (r.field(t, WireType.LengthDelimited, seen) === postedContent) {
      seen |= 1 << postedContent;
      content = readPlainContent(r, r.delimited(end));
    } else throw notPlain;
  }
  return content
    ? { $typeName: "chat.v1.MessagePosted", content, messageKind }
    : { $typeName: "chat.v1.MessagePosted", messageKind };
}

/** The event's kind, for the kinds read by hand; notPlain for the rest. */
function plainKind(no: number, end: number): Event["kind"] {
  switch (no) {
    case evMessagePosted:
      return { case: "messagePosted", value: plainPosted(end) };
    case evConversationCreated: {
      const v = plainIdsKind(end, createdKind, createdTitle, createdMembers);
      return {
        case: "conversationCreated",
        value: {
          $typeName: "chat.v1.ConversationCreated",
          kind: v.num,
          title: v.str,
          memberUserIds: v.list,
        },
      };
    }
    case evMembersAdded: {
      const v = plainIdsKind(end, addedRole, undefined, addedUsers);
      return {
        case: "membersAdded",
        value: { $typeName: "chat.v1.MembersAdded", userIds: v.list, role: v.num },
      };
    }
    default:
      throw notPlain;
  }
}

function plainEvent(): Event {
  const end = r.buf.length;
  let conversationId = "";
  let seq = 0n;
  let eventId = "";
  let actorUserId = "";
  let actorDeviceId = "";
  let clientMsgId = "";
  let createdAt: Timestamp | undefined;
  let redacted = false;
  let kind: Event["kind"] | undefined;
  let seen = 0;
  while (r.pos < end) {
    const tag = r.uint32(end);
    // Any other wire type fails the check as length-delimited.
    const varint = (tag & 7) === WireType.Varint;
    const no = r.field(tag, varint ? WireType.Varint : WireType.LengthDelimited, seen);
    seen |= 1 << no;
    if (varint) {
      if (no === evSeq) seq = r.uint64(end);
      else if (no === evRedacted) {
        const v = r.uint32(end);
        if (v > 1) throw notPlain;
        redacted = v === 1;
      } else throw notPlain;
      continue;
    }
    switch (no) {
      case evConversationId:
        conversationId = r.string(end);
        break;
      case evEventId:
        eventId = r.string(end);
        break;
      case evActorUserId:
        actorUserId = r.string(end);
        break;
      case evActorDeviceId:
        actorDeviceId = r.string(end);
        break;
      case evClientMsgId:
        clientMsgId = r.string(end);
        break;
      case evCreatedAt:
        createdAt = plainTimestamp(r.delimited(end));
        break;
      default:
        // A second member of the oneof replaces the first in fromBinary; that is its to read.
        if (kind) throw notPlain;
        kind = plainKind(no, r.delimited(end));
    }
  }
  if (!kind) throw notPlain;
  const event: Event = {
    $typeName: "chat.v1.Event",
    conversationId,
    seq,
    eventId,
    actorUserId,
    actorDeviceId,
    clientMsgId,
    redacted,
    kind,
  };
  if (createdAt) event.createdAt = createdAt;
  return event;
}
