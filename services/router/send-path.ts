import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Actor, ApplyResponse } from "../../gen/chat/internal/v1/router_service_pb.js";
import { ConversationKind, type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";
import type { MessageLog } from "../../lib/backends/message-log.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import {
  BackendUnavailableError,
  ConversationExistsError,
  DuplicateEventError,
  fail,
  SeqConflictError,
  toConnectError,
} from "../../lib/errors.js";
import { newId } from "../../lib/ids.js";
import { createKeyedQueue } from "../../lib/keyed-queue.js";
import type { Logger } from "../../lib/logger.js";
import { timestampAt } from "../../lib/timestamps.js";
import { authorize } from "./authorize.js";
import type { ConversationCache } from "./conversation-cache.js";
import type { Fanout } from "./fanout.js";
import type { StoreClient } from "./store-client.js";

export interface SendPathDeps {
  log: MessageLog;
  store: StoreClient;
  soft: SoftState;
  cache: ConversationCache;
  fanout: Fanout;
  groupMaxMembers: number;
  logger: Logger;
}

/** The outcome of a change: `event` is unset when the change had no effect. */
export type Applied = ApplyResponse;

// The messages built for every send are literals typed by the generated
// types, which check that every field is given, instead of create(), which
// walks the schema each time (see "The send path" in docs/ARCHITECTURE.md).
const applied = (event: Event | undefined, duplicate: boolean): Applied => ({
  $typeName: "chat.internal.v1.ApplyResponse",
  ...(event ? { event } : {}),
  duplicate,
});

/** Retries of a change whose seq was also handed to another change. */
const maxConflictRetries = 5;
/**
 * Retries of a change that landed behind a hole left by a failed change ahead
 * of it. Not the change's fault, and every round commits or settles the changes
 * ahead, so the bound is only a backstop.
 */
const maxHoleRetries = 100;
/** Reseeds of a counter found out of step with the conversation's head before giving up. */
const maxReseeds = 3;

const dedupKey = (conversationId: string, actorUserId: string, clientMsgId: string) =>
  `${conversationId}\u0000${actorUserId}\u0000${clientMsgId}`;

/**
 * The send path. Every change to a conversation passes through `apply`:
 *
 * 1. dedup: concurrent attempts of one (conversation, sender, client_msg_id)
 *    wait for the first; a key the store already holds returns the original
 *    event. A log with verdicts judges that at the durability point (the
 *    refused append's seq is taken again by the changes behind it); without
 *    verdicts the store is asked before a seq is taken;
 * 2. in the conversation's queue: authorize against the working state,
 *    take the next seq, and append to the log (queue order = seq order);
 * 3. wait until the log says the event is durable, then acknowledge;
 * 4. fan out to members' devices, in seq order per conversation.
 *
 * The durability point re-checks seq contiguity and idempotency keys, so a
 * lost counter or a lagging lookup can never produce a duplicate or a hole.
 * A log without verdicts has no such check after its acknowledgement, so
 * every seq taken is first checked against the working view's head.
 */
export function createSendPath(deps: SendPathDeps) {
  const queue = createKeyedQueue();
  const inflight = new Map<string, Promise<Applied>>();

  /**
   * Conversations that refused a retry at the durability point lately, until
   * when. A refused retry's seq leaves a hole that fails every change queued
   * behind it; when clients resend their outboxes at once (after an outage)
   * that repeats for each retry, so such a conversation has keys looked up
   * before a seq is taken, as a log without verdicts always does.
   */
  const retrying = new Map<string, number>();
  const retryWindowMs = 10_000;
  const lookUpFirst = (conversationId: string) => {
    const until = retrying.get(conversationId);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    retrying.delete(conversationId);
    return false;
  };
  const sawRetry = (conversationId: string) => {
    // Bounded: past this many, the oldest marks go first.
    if (retrying.size >= 10_000) retrying.delete(retrying.keys().next().value!);
    retrying.delete(conversationId);
    retrying.set(conversationId, Date.now() + retryWindowMs);
  };

  const durableHead = async (conversationId: string) => {
    // A head read while own appends are in flight lags them: seeding from it
    // would hand their seqs out again and fail every change behind them (the
    // store's reads wait for it to consume what was appended; see createStore).
    await deps.cache.settled(conversationId);
    return (await deps.store.loadMembership({ conversationId })).headSeq;
  };

  /**
   * The event stored or appended under a sender's key: the log holds what
   * the store has not consumed yet (a log without verdicts), the store the rest.
   */
  const findByKey = async (actor: Actor, proposal: Event) => {
    const conversationId = proposal.conversationId;
    const pending = deps.log.pendingKey(conversationId, actor.userId, proposal.clientMsgId);
    if (pending) return pending;
    const { event } = await deps.store.findEvent({
      conversationId,
      actorUserId: actor.userId,
      clientMsgId: proposal.clientMsgId,
    });
    return event;
  };

  /** Drops every cached notion of the conversation's state after a failed append. */
  const forget = async (conversationId: string) => {
    deps.cache.invalidate(conversationId);
    await deps.soft.sequencer.reset(conversationId);
  };

  /**
   * The event a retried change made the first time, if the store holds one
   * under its key. Asked only once a change is refused or has no effect: a
   * log with verdicts spots retries at the durability point, which a retry
   * refused by authorization (its delete already done, its sender gone since)
   * never reaches.
   */
  const original = async (actor: Actor, proposal: Event) => {
    if (!proposal.clientMsgId) return undefined;
    return findByKey(actor, proposal).catch(() => undefined);
  };

  async function sequence(actor: Actor, proposal: Event) {
    const conversationId = proposal.conversationId;
    let staged: { event: Event; durable: Promise<void> } | undefined;
    try {
      staged = await queue.run(conversationId, () => stage(actor, proposal));
    } catch (err) {
      const first = await original(actor, proposal);
      if (first) return applied(first, true);
      throw err;
    }
    if (!staged) {
      const first = await original(actor, proposal);
      return first ? applied(first, true) : applied(undefined, false);
    }
    try {
      await staged.durable;
    } catch (err) {
      await forget(conversationId);
      if (err instanceof DuplicateEventError) {
        sawRetry(conversationId);
        return applied(err.original, true);
      }
      throw err;
    }
    return applied(staged.event, false);
  }

  /**
   * Authorizes the change against the conversation's view, takes its seq and
   * appends it; runs in the conversation's queue. Undefined: no effect.
   */
  async function stage(actor: Actor, proposal: Event) {
    const conversationId = proposal.conversationId;
    let reseeds = 0;
    for (;;) {
      const state = await deps.cache.get(conversationId);
      if (!state) throw fail.notFound("conversation not found");
      let decision: Awaited<ReturnType<typeof authorize>>;
      try {
        decision = await authorize(
          { store: deps.store, groupMaxMembers: deps.groupMaxMembers },
          actor,
          state,
          proposal,
        );
      } catch (err) {
        // Refused by a view that was dropped meanwhile: judge it again.
        if (!deps.cache.holds(state)) continue;
        throw err;
      }
      if (decision.noop) return undefined;
      const seq = await deps.soft.sequencer.next(conversationId, () => durableHead(conversationId));
      if (!deps.cache.holds(state)) {
        // A failed append dropped the view while this change waited, so it
        // may have been judged against changes that never became durable.
        // Nothing behind it has a seq yet: give this one back and start over.
        await deps.soft.sequencer.reset(conversationId);
        continue;
      }
      if (seq !== state.lastSeq + 1n) {
        // The counter is out of step (an increment that landed after its
        // timeout, an older copy of Redis), or this view is: the seq would
        // leave a hole or be taken twice. Reload both from the durable head.
        deps.logger.warn(
          { conversationId, seq: String(seq), head: String(state.lastSeq) },
          "seq counter out of step with the conversation; reseeding",
        );
        await forget(conversationId);
        if (++reseeds > maxReseeds) {
          throw new BackendUnavailableError("sequence counter out of step", {
            cause: new SeqConflictError(conversationId, state.lastSeq + 1n, seq),
          });
        }
        continue;
      }
      const event: Event = {
        $typeName: "chat.v1.Event",
        conversationId,
        seq,
        eventId: newId("e_"),
        actorUserId: actor.userId,
        actorDeviceId: actor.deviceId,
        clientMsgId: proposal.clientMsgId,
        createdAt: timestampAt(Date.now()),
        redacted: false,
        kind: decision.kind,
      };
      decision.mutate?.(state, seq);
      if (seq > state.lastSeq) state.lastSeq = seq;
      const durable = deps.log.append(event);
      deps.cache.track(conversationId, durable);
      const { onDurable } = decision;
      if (onDurable) {
        durable.then(
          () => onDurable(state, seq),
          () => undefined,
        );
      }
      deps.fanout.enqueue(event, durable, decision.recipients);
      return { event, durable };
    }
  }

  async function applyOnce(actor: Actor, proposal: Event): Promise<Applied> {
    const key = proposal.clientMsgId
      ? dedupKey(proposal.conversationId, actor.userId, proposal.clientMsgId)
      : undefined;
    if (key) {
      const running = inflight.get(key);
      if (running) {
        const first = await running.catch(() => undefined);
        if (first?.event) return applied(first.event, true);
      }
      if (!deps.log.judges || lookUpFirst(proposal.conversationId)) {
        // Without verdicts from the log, ask the log and the durable store
        // before a seq is taken: a retry, however late, must not be appended again.
        const event = await findByKey(actor, proposal);
        if (event) return applied(event, true);
      }
    }
    const attempt = sequence(actor, proposal);
    if (key) {
      inflight.set(key, attempt);
      void attempt
        .catch(() => undefined)
        .finally(() => {
          if (inflight.get(key) === attempt) inflight.delete(key);
        });
    }
    return attempt;
  }

  /** Serializes creation per direct pair or per group request id. */
  async function openConversation(
    actor: Actor,
    kind: ConversationKind,
    title: string,
    memberUserIds: string[],
    clientRequestId: string,
  ): Promise<{ conversationId: string; created: boolean }> {
    const direct = kind === ConversationKind.DIRECT;
    const peer = memberUserIds[0] ?? "";
    const lockKey = direct
      ? `direct:${[actor.userId, peer].sort().join(" ")}`
      : clientRequestId
        ? `group:${actor.userId} ${clientRequestId}`
        : `group:${newId("r_")}`;
    return queue.run(lockKey, async () => {
      if (direct || clientRequestId) {
        const found = await deps.store.findConversation({
          key: direct
            ? { case: "direct", value: { userA: actor.userId, userB: peer } }
            : { case: "group", value: { creatorUserId: actor.userId, clientRequestId } },
        });
        if (found.conversationId) return { conversationId: found.conversationId, created: false };
      }
      const members = [actor.userId, ...memberUserIds.filter((u) => u !== actor.userId)];
      const event = create(EventSchema, {
        conversationId: newId("c_"),
        seq: 1n,
        eventId: newId("e_"),
        actorUserId: actor.userId,
        actorDeviceId: actor.deviceId,
        clientMsgId: direct ? "" : clientRequestId,
        createdAt: timestampNow(),
        kind: {
          case: "conversationCreated",
          value: { kind, title: direct ? "" : title, memberUserIds: members },
        },
      });
      // Its id may be used next on any core (another core may own it): the store
      // holds it before anyone, creator or member, learns the id.
      const stored = deps.log.append(event).then(() => deps.log.caughtUp(event.conversationId));
      deps.fanout.enqueue(event, stored, members);
      try {
        await stored;
      } catch (err) {
        if (err instanceof ConversationExistsError) {
          return { conversationId: err.conversationId, created: false };
        }
        throw toConnectError(err);
      }
      return { conversationId: event.conversationId, created: true };
    });
  }

  return {
    /**
     * Authorizes, deduplicates and sequences one change, and resolves once it
     * is durable. Throws ConnectErrors with precise codes.
     */
    async apply(actor: Actor, proposal: Event): Promise<Applied> {
      let conflicts = 0;
      let holes = 0;
      for (;;) {
        try {
          return await applyOnce(actor, proposal);
        } catch (err) {
          if (err instanceof SeqConflictError) {
            const hole = err.expected < err.got;
            if (hole ? holes++ < maxHoleRetries : conflicts++ < maxConflictRetries) {
              deps.logger.debug({ err }, "seq conflict, retrying");
              continue;
            }
          }
          throw toConnectError(err);
        }
      }
    },
    openConversation,
    /** Resolves when everything queued so far is sequenced and fanned out. */
    async idle() {
      await queue.idle();
      await deps.fanout.idle();
    },
  };
}
