import { Buffer } from "node:buffer";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { GetHistoryResponseSchema } from "../../gen/chat/v1/chat_service_pb.js";
import {
  ConversationCreatedSchema,
  type Event,
  EventSchema,
  MembersAddedSchema,
  MessageContentSchema,
  MessageKind,
  MessagePostedSchema,
} from "../../gen/chat/v1/event_pb.js";
import {
  decodeEvent,
  decodePlainEvent,
  encodeEvent,
  eventBytes,
  rememberEventBytes,
  storedEventFields,
  storedEventSeq,
} from "../../lib/event-bytes.js";
import { expectLeavesRestToFromBinary, expectReadsPlain, rng } from "../helpers/fast-decode.js";

const pieces = [
  "",
  "a",
  "c_01HZX",
  "✓",
  "é",
  "😀",
  "\ud800",
  "\u0000",
  "x".repeat(127),
  "y".repeat(300),
];

function posted(r: () => number): Event {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const str = () => Array.from({ length: Math.floor(r() * 3) }, () => pick(pieces)).join("");
  const big = () =>
    pick([
      0n,
      1n,
      127n,
      128n,
      16_383n,
      16_384n,
      2n ** 31n,
      2n ** 32n + 5n,
      2n ** 49n - 1n,
      2n ** 49n,
      2n ** 53n - 1n,
    ]);
  const ev = create(EventSchema, {
    conversationId: str(),
    seq: big(),
    eventId: str(),
    actorUserId: str(),
    actorDeviceId: str(),
    clientMsgId: str(),
    redacted: r() < 0.2,
    kind: {
      case: "messagePosted",
      value: { messageKind: pick([MessageKind.UNSPECIFIED, MessageKind.USER, MessageKind.BOT]) },
    },
  });
  if (r() < 0.8) ev.createdAt = timestampFromMs(Math.floor(r() * 2_000_000_000_000));
  if (r() < 0.2 && ev.createdAt) ev.createdAt.nanos = 0;
  if (r() < 0.1 && ev.createdAt) ev.createdAt.seconds = 0n;
  if (ev.kind.case === "messagePosted" && r() < 0.9) {
    ev.kind.value.content = create(MessageContentSchema, {
      text: r() < 0.02 ? "z".repeat(70_000) : str(),
      replyToSeq: r() < 0.5 ? 0n : big(),
    });
  }
  return ev;
}

/** Events the hand-written encoder and decoder leave to protobuf-es. */
const notPlain = (base: Event): Event[] => [
  create(EventSchema, {
    conversationId: "c_1",
    seq: 2n,
    kind: { case: "messageDeleted", value: { targetSeq: 1n } },
  }),
  {
    ...base,
    kind: {
      case: "messagePosted",
      value: create(MessagePostedSchema, {
        content: { text: "with a file", attachments: [{ mediaRef: "s3://x", sizeBytes: 9n }] },
      }),
    },
  },
  { ...base, createdAt: { ...timestampFromMs(-5_000), nanos: 0 } },
  { ...base, createdAt: { ...timestampFromMs(5_000), nanos: -1 } },
  { ...base, $unknown: [{ no: 99, wireType: 0, data: new Uint8Array([1]) }] },
];

describe("encodeEvent", () => {
  it("writes what toBinary writes, byte for byte, for posted messages", () => {
    const r = rng(7);
    for (let i = 0; i < 3000; i++) {
      const ev = posted(r);
      // Compared natively: a 70 KB element-wise diff per case would take minutes.
      const same = Buffer.compare(encodeEvent(ev), toBinary(EventSchema, ev)) === 0;
      expect(
        same,
        `case ${i}: ${JSON.stringify(ev, (_, v) => (typeof v === "bigint" ? `${v}n` : v))}`,
      ).toBe(true);
    }
  });

  it("matches toBinary for other kinds, attachments, unknown fields and values past 2^53", () => {
    const base = posted(rng(11));
    for (const ev of [...notPlain(base), { ...base, seq: 2n ** 64n - 1n }]) {
      expect(encodeEvent(ev)).toEqual(toBinary(EventSchema, ev));
    }
  });
});

/** A conversation's creation or members added: the kinds that carry lists of user ids. */
function membership(r: () => number): Event {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const str = () => Array.from({ length: Math.floor(r() * 3) }, () => pick(pieces)).join("");
  const ids = () => Array.from({ length: Math.floor(r() * r() * 120) }, str);
  const ev = posted(r);
  ev.kind =
    r() < 0.5
      ? {
          case: "conversationCreated",
          value: create(ConversationCreatedSchema, {
            kind: pick([0, 1, 2, 7]),
            title: str(),
            memberUserIds: ids(),
          }),
        }
      : {
          case: "membersAdded",
          value: create(MembersAddedSchema, { userIds: ids(), role: pick([0, 1, 3, 9]) }),
        };
  return ev;
}

/** Posted messages, and one in five a creation or members added. */
const readByHand = (r: () => number) => (r() < 0.8 ? posted(r) : membership(r));

describe("decodeEvent", () => {
  it("reads the common kinds itself, into exactly what fromBinary returns, from a Buffer or a Uint8Array", () => {
    const r = rng(7);
    const plain = Array.from({ length: 3000 }, () => toBinary(EventSchema, readByHand(r)));
    expectReadsPlain(EventSchema, decodePlainEvent, plain);
  });

  it("leaves everything else to fromBinary, with the same result or the same error", () => {
    const r = rng(13);
    expectLeavesRestToFromBinary({
      schema: EventSchema,
      decode: decodeEvent,
      fast: decodePlainEvent,
      plain: Array.from({ length: 400 }, () => toBinary(EventSchema, readByHand(r))),
      others: [
        ...notPlain(posted(r)),
        create(EventSchema, { conversationId: "c_1", seq: 3n }),
        create(EventSchema, {
          conversationId: "c_1",
          kind: { case: "memberRemoved", value: { userId: "u1", reason: 2 } },
        }),
        create(EventSchema, {
          conversationId: "c_1",
          kind: { case: "reactionAdded", value: { targetSeq: 1n, emoji: "👍" } },
        }),
      ].map((ev) => toBinary(EventSchema, ev)),
      suffixes: [
        Buffer.from([0x40, 0x02]), // redacted = 2, which fromBinary reads as true
        Buffer.from([0x82, 0x01, 0x02, 0x10, 0x01]), // members_added { role = 1 }: a second kind
      ],
      seed: 11,
    });
  });
});

describe("storedEventSeq", () => {
  it("reads the seq of every kind of event from its encoding, as fromBinary does", () => {
    const r = rng(23);
    const base = posted(r);
    const events = [
      ...Array.from({ length: 500 }, () => readByHand(r)),
      ...notPlain(base),
      { ...base, seq: 2n ** 64n - 1n },
      { ...base, seq: 0n },
    ];
    for (const ev of events) {
      const bytes = toBinary(EventSchema, ev);
      expect(storedEventSeq(bytes)).toBe(fromBinary(EventSchema, bytes).seq);
    }
  });

  it("throws on malformed bytes, as fromBinary does", () => {
    const bytes = toBinary(EventSchema, posted(rng(5)));
    const cut = bytes.subarray(0, bytes.length - 1);
    expect(() => fromBinary(EventSchema, cut)).toThrow();
    expect(() => storedEventSeq(cut)).toThrow();
  });
});

describe("storedEventFields", () => {
  const eventsField = GetHistoryResponseSchema.field.events.number;
  /** A response carrying `events` as stored bytes, decoded as a client decodes it. */
  const viaStoredBytes = (events: Event[]) => {
    const res = create(GetHistoryResponseSchema, { hasMore: true, headSeq: 9n });
    res.$unknown = storedEventFields(eventsField, events.map(eventBytes));
    return fromBinary(GetHistoryResponseSchema, toBinary(GetHistoryResponseSchema, res));
  };
  const viaReflection = (events: Event[]) =>
    fromBinary(
      GetHistoryResponseSchema,
      toBinary(
        GetHistoryResponseSchema,
        create(GetHistoryResponseSchema, { events, hasMore: true, headSeq: 9n }),
      ),
    );

  it("decodes as the repeated field itself, in order, for pages of every size and kind", () => {
    const r = rng(17);
    const events = Array.from({ length: 400 }, () => posted(r));
    events.push(...notPlain(events[0]!));
    // Lengths of one, two and three varint bytes (a 70,000-character text among the generated).
    expect(events.some((e) => encodeEvent(e).length > 16_384)).toBe(true);
    for (const page of [[], events.slice(0, 1), events.slice(0, 50), events]) {
      expect(viaStoredBytes(page)).toStrictEqual(viaReflection(page));
    }
  });

  it("writes the encodings it is given verbatim, as the store read them", () => {
    const r = rng(9);
    const events = Array.from({ length: 60 }, () => posted(r));
    const res = create(GetHistoryResponseSchema, { hasMore: false, headSeq: 60n });
    res.$unknown = storedEventFields(
      eventsField,
      events.map((e) => toBinary(EventSchema, e)),
    );
    const decoded = fromBinary(GetHistoryResponseSchema, toBinary(GetHistoryResponseSchema, res));
    const reference = create(GetHistoryResponseSchema, { events, hasMore: false, headSeq: 60n });
    expect(decoded).toStrictEqual(
      fromBinary(GetHistoryResponseSchema, toBinary(GetHistoryResponseSchema, reference)),
    );
  });

  it("writes each event's remembered bytes verbatim", () => {
    const r = rng(5);
    const [shown, stored] = [posted(r), posted(r)];
    rememberEventBytes(shown, toBinary(EventSchema, stored));
    expect(viaStoredBytes([shown]).events).toStrictEqual(viaReflection([stored]).events);
  });
});
