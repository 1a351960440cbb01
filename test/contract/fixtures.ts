import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach } from "vitest";
import {
  ConversationKind,
  type Event,
  EventSchema,
  MessageKind,
  Role,
} from "../../gen/chat/v1/event_pb.js";
import type { EventStore } from "../../lib/backends/event-store.js";
import type { MetadataStore } from "../../lib/backends/metadata-store.js";
import { newId } from "../../lib/ids.js";

/**
 * What the event-store and metadata-store contracts run against. `reopen`
 * closes the current stores and opens new ones on the same durable data
 * (SQLite: the same file; Cassandra: a new session on the same keyspace).
 */
export interface StoreHandle {
  events: EventStore;
  metadata: MetadataStore;
  reopen(): Promise<{ events: EventStore; metadata: MetadataStore }>;
  /** Closes whatever is open and removes the data. */
  cleanup(): Promise<void>;
}

export type StoreFactory = () => Promise<StoreHandle>;

export const newConversationId = () => newId("c_");

/**
 * Registers cleanup for the current describe block and returns `open`, which
 * makes a fresh backend for one test; it is torn down after that test.
 */
export function freshPerTest<T extends { cleanup(): Promise<void> }>(
  factory: () => Promise<T>,
): () => Promise<T> {
  let current: T | undefined;
  afterEach(async () => {
    await current?.cleanup();
    current = undefined;
  });
  return async () => {
    current = await factory();
    return current;
  };
}

interface Common {
  atMs?: number;
  clientMsgId?: string;
  deviceId?: string;
}

const base = (conversationId: string, seq: bigint | number, actor: string, o: Common) =>
  ({
    conversationId,
    seq: BigInt(seq),
    eventId: newId("e_"),
    actorUserId: actor,
    actorDeviceId: o.deviceId ?? "",
    clientMsgId: o.clientMsgId ?? "",
    createdAt: timestampFromMs(o.atMs ?? Date.now()),
  }) as const;

/** Builders for committed-shape events, as the router would produce them. */
export const ev = {
  group(
    conversationId: string,
    actor: string,
    others: string[],
    o: Common & { title?: string } = {},
  ): Event {
    return create(EventSchema, {
      ...base(conversationId, 1, actor, o),
      kind: {
        case: "conversationCreated",
        value: {
          kind: ConversationKind.GROUP,
          title: o.title ?? "group",
          memberUserIds: [actor, ...others],
        },
      },
    });
  },
  direct(conversationId: string, actor: string, peer: string, o: Common = {}): Event {
    return create(EventSchema, {
      ...base(conversationId, 1, actor, o),
      kind: {
        case: "conversationCreated",
        value: { kind: ConversationKind.DIRECT, memberUserIds: [actor, peer] },
      },
    });
  },
  posted(
    conversationId: string,
    seq: bigint | number,
    actor: string,
    text: string,
    o: Common = {},
  ): Event {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, o),
      kind: {
        case: "messagePosted",
        value: {
          content: {
            text,
            attachments: [{ mediaRef: `media/${text}`, mimeType: "image/png", sizeBytes: 10n }],
          },
          messageKind: MessageKind.USER,
        },
      },
    });
  },
  edited(conversationId: string, seq: number, actor: string, target: number, text: string) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, {}),
      kind: { case: "messageEdited", value: { targetSeq: BigInt(target), text } },
    });
  },
  deleted(conversationId: string, seq: number, actor: string, target: number) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, {}),
      kind: { case: "messageDeleted", value: { targetSeq: BigInt(target) } },
    });
  },
  reacted(conversationId: string, seq: number, actor: string, target: number, emoji: string) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, {}),
      kind: { case: "reactionAdded", value: { targetSeq: BigInt(target), emoji } },
    });
  },
  unreacted(conversationId: string, seq: number, actor: string, target: number, emoji: string) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, {}),
      kind: { case: "reactionRemoved", value: { targetSeq: BigInt(target), emoji } },
    });
  },
  added(conversationId: string, seq: number, actor: string, userIds: string[], o: Common = {}) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, o),
      kind: { case: "membersAdded", value: { userIds, role: Role.MEMBER } },
    });
  },
  removed(conversationId: string, seq: number, actor: string, userId: string, o: Common = {}) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, o),
      kind: { case: "memberRemoved", value: { userId } },
    });
  },
  roleChanged(conversationId: string, seq: number, actor: string, userId: string, role: Role) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, {}),
      kind: { case: "memberRoleChanged", value: { userId, role } },
    });
  },
  renamed(conversationId: string, seq: number, actor: string, title: string) {
    return create(EventSchema, {
      ...base(conversationId, seq, actor, {}),
      kind: { case: "conversationRenamed", value: { title } },
    });
  },
};

export const seqsOf = (events: Event[]) => events.map((e) => Number(e.seq));

export const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

export const textOf = (e: Event | undefined) =>
  e?.kind.case === "messagePosted" ? (e.kind.value.content?.text ?? "") : undefined;

/** Polls until `check` returns true, failing after `timeoutMs`. */
export async function waitFor(check: () => boolean, timeoutMs = 5000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
