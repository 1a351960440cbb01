import type { ConversationKind, Role } from "../../gen/chat/v1/event_pb.js";
import type { StoreClient } from "./store-client.js";

export interface MemberState {
  role: Role;
  joinedSeq: bigint;
}

/**
 * The router's working view of one conversation. It is updated as changes
 * are sequenced (before they are durable), so later changes are authorized
 * against it; any failed append drops it and it is reloaded from the store
 * once the appends in flight have settled.
 */
export interface ConversationState {
  conversationId: string;
  kind: ConversationKind;
  members: Map<string, MemberState>;
  /** Highest seq sequenced here or known durable. */
  lastSeq: bigint;
  /** Messages deleted by changes sequenced here and not yet durable (the store then shows them redacted). */
  deleted?: Set<bigint>;
  /**
   * Reactions changed by changes sequenced here and not yet durable, by
   * reactionKey: whether the user has the reaction after the change at `seq`.
   */
  reactions?: Map<string, { present: boolean; seq: bigint }>;
}

/** Keys ConversationState.reactions: one user's one emoji on one message. */
export const reactionKey = (targetSeq: bigint, userId: string, emoji: string) =>
  `${targetSeq}\u0000${userId}\u0000${emoji}`;

/**
 * A bounded LRU of ConversationState, loaded on demand from the store, and
 * the appends in flight per conversation. A load first waits for those to
 * settle: the store lags them, and a view without a sequenced change (say a
 * removal) would authorize what comes after it against the past.
 */
export function createConversationCache(store: StoreClient, maxEntries: number) {
  const entries = new Map<string, ConversationState>();
  const loading = new Map<string, Promise<ConversationState | undefined>>();
  const unsettled = new Map<string, Set<Promise<void>>>();

  const settled = async (id: string) => {
    const pending = unsettled.get(id);
    if (pending) await Promise.allSettled([...pending]);
  };

  const load = async (id: string): Promise<ConversationState | undefined> => {
    await settled(id);
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
    /**
     * True while `state` is the cached view. A change that awaited anything
     * after reading it checks this before it appends: if the view was
     * dropped meanwhile, the change was authorized against a view that may
     * hold failed changes, and its own effect would be lost with it.
     */
    holds(state: ConversationState): boolean {
      return entries.get(state.conversationId) === state;
    },
    invalidate(id: string) {
      entries.delete(id);
      loading.delete(id);
    },
    /** Counts `durable` as in flight for the conversation until it settles. */
    track(id: string, durable: Promise<void>) {
      let set = unsettled.get(id);
      if (!set) {
        set = new Set();
        unsettled.set(id, set);
      }
      const mine = set;
      mine.add(durable);
      const untrack = () => {
        mine.delete(durable);
        if (mine.size === 0 && unsettled.get(id) === mine) unsettled.delete(id);
      };
      durable.then(untrack, untrack);
    },
    /** Resolves once every append in flight for the conversation when called has settled. */
    settled,
    /** Members a frame about this conversation goes to right now. */
    memberIds(state: ConversationState): string[] {
      return [...state.members.keys()];
    },
  };
}

export type ConversationCache = ReturnType<typeof createConversationCache>;
