import { Buffer } from "node:buffer";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  type Event,
  EventSchema,
  MessageContentSchema,
  MessageKind,
  MessagePostedSchema,
} from "../../gen/chat/v1/event_pb.js";
import { encodeEvent } from "../../lib/event-bytes.js";

/** A small deterministic generator, so a failure names the case that broke. */
function rng(seed: number) {
  let x = seed;
  return () => {
    x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
    return x / 2_147_483_648;
  };
}

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
    pick([0n, 1n, 127n, 128n, 16_383n, 16_384n, 2n ** 31n, 2n ** 32n + 5n, 2n ** 53n - 1n]);
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
    const r = rng(11);
    const base = posted(r);
    const cases: Event[] = [
      create(EventSchema, {
        conversationId: "c_1",
        seq: 2n,
        kind: { case: "messageDeleted", value: { targetSeq: 1n } },
      }),
      { ...base, seq: 2n ** 64n - 1n },
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
      { ...base, $unknown: [{ no: 99, wireType: 0, data: new Uint8Array([1]) }] },
    ];
    for (const ev of cases) expect(encodeEvent(ev)).toEqual(toBinary(EventSchema, ev));
  });
});
