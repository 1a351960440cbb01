import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Event, EventSchema } from "../gen/chat/v1/event_pb.js";

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
    bytes = toBinary(EventSchema, event);
    cache.set(event, bytes);
  }
  return bytes;
}

/**
 * Decodes an event and remembers the bytes it came from, so writing it out
 * again costs nothing. Only for events that are not modified afterwards.
 */
export function decodeEvent(bytes: Uint8Array): Event {
  const event = fromBinary(EventSchema, bytes);
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
