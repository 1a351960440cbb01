import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { ConversationKind } from "../gen/chat/v1/event_pb.js";

/** FNV-1a: a stable 32-bit hash, the same in every process and version. */
function fnv1a(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * The header with which an edge tells each core how many cores share the
 * conversations; a core that keeps them in a local file refuses more than one.
 */
export const coresHeader = "chat-cores";

/** Which of `n` cores owns `key`. */
export const ownerOf = (key: string, n: number) => fnv1a(key) % n;

type Fields = Record<string, unknown> & { proposal?: unknown; actor?: unknown };

/**
 * What a call is about, for picking its core: the conversation it names
 * (also inside a proposed event), the pair a direct conversation is opened
 * for, else the device, else the user; undefined for calls about none of
 * them (lookups of several users).
 */
export function shardKey(input: unknown): string | undefined {
  const i = (input ?? {}) as Fields;
  const proposal = (i.proposal ?? {}) as Fields;
  const actor = (i.actor ?? {}) as Fields;
  const pick = (...vals: unknown[]) =>
    vals.find((v): v is string => typeof v === "string" && v !== "");
  const conv = pick(i.conversationId, proposal.conversationId);
  if (conv) return `c ${conv}`;
  // Both users of a pair open their direct conversation on one core, which
  // serializes the two: on two cores each could create one.
  const peer = Array.isArray(i.memberUserIds) ? pick(i.memberUserIds[0]) : undefined;
  const opener = pick(actor.userId);
  if (i.kind === ConversationKind.DIRECT && peer && opener) {
    return `p ${[opener, peer].sort().join(" ")}`;
  }
  const device = pick(i.deviceId, actor.deviceId);
  if (device) return `d ${device}`;
  const user = pick(i.userId, i.viewerUserId, actor.userId, i.creatorUserId);
  return user ? `u ${user}` : undefined;
}

/**
 * Internal calls spread over several cores, each reached by its own
 * transport. A call about a conversation goes to the core that owns it (a
 * hash of its id), so one router sequences and caches each conversation;
 * a direct conversation is opened on its pair's core, so the pair's two
 * users cannot each create one; device and user calls go by the device or
 * user, so one core writes each device's rows; the rest take turns. Every
 * core must share one Cassandra keyspace and one Redis. A core that is away
 * makes its share UNAVAILABLE (no other core takes it over: two routers for
 * a conversation would each trust their own cache); changing the list moves
 * ownership, so restart the cores with the edges.
 */
export function createCoreShards(
  cores: (Transport & { close(): void })[],
): Transport & { close(): void } {
  if (cores.length === 0) throw new ConnectError("no core configured", Code.Internal);
  let turn = 0;
  const coreFor = (input: unknown) => {
    const key = shardKey(input);
    if (key !== undefined) return cores[ownerOf(key, cores.length)]!;
    turn = (turn + 1) % cores.length;
    return cores[turn]!;
  };
  return {
    unary(method, signal, timeoutMs, header, input, contextValues) {
      return coreFor(input).unary(method, signal, timeoutMs, header, input, contextValues);
    },
    stream(method, signal, timeoutMs, header, input, contextValues) {
      return cores[0]!.stream(method, signal, timeoutMs, header, input, contextValues);
    },
    close() {
      for (const c of cores) c.close();
    },
  };
}
