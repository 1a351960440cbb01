import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type ServerFrame, SessionResponseSchema } from "../../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { SyncBatch } from "../../gen/chat/v1/model_pb.js";
import { eventBytes, hasUnknown } from "../../lib/event-bytes.js";

// Field numbers from chat/v1/chat_service.proto and model.proto.
const responseFrame = 1;
const frameReplyTo = 1;
const frameSendAck = 11;
const frameEvent = 12;
const frameSync = 16;
const ackEvent = 1;
const ackDuplicate = 2;
const syncConversationId = 1;
const syncEvents = 2;
const syncGap = 3;
const syncGapAfterSeq = 4;
const syncHeadSeq = 5;

const writeEvent = (w: BinaryWriter, fieldNo: number, event: Event) =>
  w.tag(fieldNo, WireType.LengthDelimited).bytes(eventBytes(event));

/**
 * Encodes a SessionResponse carrying `f`, byte for byte as toBinary would.
 * Frames that carry events (event, send-ack, sync) embed each event's cached
 * encoding (see eventBytes), so an event fanned out to many streams is
 * encoded once; other frames go through toBinary.
 */
export function encodeSessionResponse(f: ServerFrame): Uint8Array {
  const k = f.frame;
  if (
    hasUnknown(f) ||
    (k.case !== "event" && k.case !== "sendAck" && k.case !== "sync") ||
    (k.case !== "event" && hasUnknown(k.value))
  ) {
    return toBinary(SessionResponseSchema, create(SessionResponseSchema, { frame: f }));
  }
  if (k.case === "sync") {
    const w = new BinaryWriter();
    w.tag(responseFrame, WireType.LengthDelimited).fork();
    if (f.replyToFrameId !== "") {
      w.tag(frameReplyTo, WireType.LengthDelimited).string(f.replyToFrameId);
    }
    w.tag(frameSync, WireType.LengthDelimited).fork();
    writeSync(w, k.value);
    return w.join().join().finish();
  }
  // Event and send-ack frames, the per-message ones, are laid out by hand:
  // a BinaryWriter costs more than the copy of the event's bytes.
  const replyTo = f.replyToFrameId === "" ? undefined : utf8.encode(f.replyToFrameId);
  const ev = k.case === "event" ? k.value : k.value.event;
  const evBytes = ev ? eventBytes(ev) : undefined;
  const duplicate = k.case === "sendAck" && k.value.duplicate;
  const evField = evBytes ? fieldSize(evBytes.length) : 0;
  // The case's own field: the event itself, or a SendResponse around it.
  const caseLen = k.case === "event" ? evBytes!.length : evField + (duplicate ? 2 : 0);
  const frameLen = (replyTo ? fieldSize(replyTo.length) : 0) + fieldSize(caseLen);
  const out = new Uint8Array(fieldSize(frameLen));
  let at = putHeader(out, 0, tagLen(responseFrame), frameLen);
  if (replyTo) {
    at = putHeader(out, at, tagLen(frameReplyTo), replyTo.length);
    out.set(replyTo, at);
    at += replyTo.length;
  }
  if (k.case === "event") {
    at = putHeader(out, at, tagLen(frameEvent), caseLen);
    out.set(evBytes!, at);
    return out;
  }
  at = putHeader(out, at, tagLen(frameSendAck), caseLen);
  if (evBytes) {
    at = putHeader(out, at, tagLen(ackEvent), evBytes.length);
    out.set(evBytes, at);
    at += evBytes.length;
  }
  if (duplicate) {
    out[at++] = (ackDuplicate << 3) | WireType.Varint;
    out[at] = 1;
  }
  return out;
}

const utf8 = new TextEncoder();

/** A length-delimited field's tag byte (field numbers below 16). */
const tagLen = (fieldNo: number) => (fieldNo << 3) | WireType.LengthDelimited;

const varintSize = (n: number) => {
  let size = 1;
  while (n >= 0x80) {
    n >>>= 7;
    size++;
  }
  return size;
};

/** Bytes of a length-delimited field with a one-byte tag and `len` bytes of payload. */
const fieldSize = (len: number) => 1 + varintSize(len) + len;

/** Writes a one-byte tag and the payload's length; returns where the payload starts. */
function putHeader(out: Uint8Array, at: number, tag: number, len: number): number {
  out[at++] = tag;
  while (len >= 0x80) {
    out[at++] = (len & 0x7f) | 0x80;
    len >>>= 7;
  }
  out[at++] = len;
  return at;
}

function writeSync(w: BinaryWriter, b: SyncBatch) {
  if (b.conversationId !== "") {
    w.tag(syncConversationId, WireType.LengthDelimited).string(b.conversationId);
  }
  for (const ev of b.events) writeEvent(w, syncEvents, ev);
  if (b.gap) w.tag(syncGap, WireType.Varint).bool(true);
  if (b.gapAfterSeq !== 0n) w.tag(syncGapAfterSeq, WireType.Varint).uint64(b.gapAfterSeq);
  if (b.headSeq !== 0n) w.tag(syncHeadSeq, WireType.Varint).uint64(b.headSeq);
}
