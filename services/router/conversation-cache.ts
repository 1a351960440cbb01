import type { ConversationKind, Role } from "../../gen/chat/v1/event_pb.js";
import type { StoreClient } from "./store-client.js";

export interface MemberState {
  role: Role;
  joinedSeq: bigint;
}

/**
 * The router's working view of one conversation. It is updated as changes
 * are sequenced (before they are durable), so later changes are authorized
 * against it; any failed append drops it and it is reloaded from the store.
 */
export interface ConversationState {
  conversationId: string;
  kind: ConversationKind;
  members: Map<string, MemberState>;
  /** Highest seq sequenced here or known durable. */
  lastSeq: bigint;
  /** Messages deleted by changes sequenced here; the store shows them redacted only once durable. */
  deleted?: Set<bigint>;
}

/** A bounded LRU of ConversationState, loaded on demand from the store. */
export function createConversationCache(store: StoreClient, maxEntries: number) {
  const entries = new Map<string, ConversationState>();
  const loading = new Map<string, Promise<ConversationState | undefined>>();

  const load = async (id: string): Promise<ConversationState | undefined> => {
    const res = await store.loadMembership({ conversationId: id });
    if (!res.found) return undefined;
    return {
      conversationId: id,
      kind: res.kind,
      members: new Map(
        res.members.map((m) => [m.userId, { role: m.role, joinedSeq: m.joinedSeq }]),
      ),
      lastSeq: res.headSeq,
    };
  };

  return {
    /** The state, or undefined when the conversation does not exist. */
    async get(id: string): Promise<ConversationState | undefined> {
      const hit = entries.get(id);
      if (hit) {
        entries.delete(id);
        entries.set(id, hit);
        return hit;
      }
      let pending = loading.get(id);
      if (!pending) {
        pending = load(id);
        loading.set(id, pending);
        const mine = pending;
        void pending
          .then((state) => {
            // An invalidate() while loading means this result may be stale.
            if (state && loading.get(id) === mine) {
              entries.set(id, state);
              if (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
            }
          })
          .catch(() => undefined)
          .finally(() => {
            if (loading.get(id) === mine) loading.delete(id);
          });
      }
      return pending;
    },
    invalidate(id: string) {
      entries.delete(id);
      loading.delete(id);
    },
    /** Members a frame about this conversation goes to right now. */
    memberIds(state: ConversationState): string[] {
      return [...state.members.keys()];
    },
  };
}

export type ConversationCache = ReturnType<typeof createConversationCache>;
