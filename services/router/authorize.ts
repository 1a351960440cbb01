import { create } from "@bufbuild/protobuf";
import type { Actor } from "../../gen/chat/internal/v1/router_service_pb.js";
import {
  ConversationKind,
  type Event,
  MemberRemovalReason,
  MemberRemovedSchema,
  MembersAddedSchema,
  MessageKind,
  Role,
} from "../../gen/chat/v1/event_pb.js";
import { fail } from "../../lib/errors.js";
import { type ConversationState, reactionKey } from "./conversation-cache.js";
import type { StoreClient } from "./store-client.js";

/** What sequencing a change will do, decided before it gets a seq. */
export interface Plan {
  noop?: false;
  /** The event's kind as it will be stored (normalized by the rules). */
  kind: Event["kind"];
  /** Users the event is delivered to. */
  recipients: string[];
  /** Applies the change to the working state once it has a seq. */
  mutate?: (state: ConversationState, seq: bigint) => void;
  /** Runs once the change is durable, when the store shows what `mutate` recorded. */
  onDurable?: (state: ConversationState, seq: bigint) => void;
}

export type Decision = Plan | { noop: true };

export interface AuthorizeDeps {
  store: StoreClient;
  groupMaxMembers: number;
}

const requireMember = (state: ConversationState, userId: string) => {
  const m = state.members.get(userId);
  if (!m) throw fail.denied("not a member of this conversation");
  return m;
};

const requireGroup = (state: ConversationState) => {
  if (state.kind !== ConversationKind.GROUP) {
    throw fail.precondition("direct conversations have fixed members and no title");
  }
};

const everyone = (state: ConversationState) => [...state.members.keys()];

const owners = (state: ConversationState) =>
  [...state.members.values()].filter((m) => m.role === Role.OWNER).length;

/** Loads the message a change refers to and checks it is a live message the actor may see. */
async function targetMessage(
  deps: AuthorizeDeps,
  state: ConversationState,
  actorJoinedSeq: bigint,
  targetSeq: bigint,
): Promise<Event> {
  if (targetSeq < 1n || targetSeq > state.lastSeq || targetSeq < actorJoinedSeq) {
    throw fail.notFound("target message not found");
  }
  if (state.deleted?.has(targetSeq)) throw fail.precondition("target message was deleted");
  const { event } = await deps.store.readEvent({
    conversationId: state.conversationId,
    seq: targetSeq,
  });
  if (!event) throw fail.notFound("target message not found");
  if (event.kind.case !== "messagePosted") throw fail.precondition("target is not a message");
  if (event.redacted) throw fail.precondition("target message was deleted");
  return event;
}

/**
 * Whether the user has the reaction: as the changes sequenced here left it,
 * or else as the store holds it (the last of the user's changes of that
 * emoji on the message).
 */
async function hasReaction(
  deps: AuthorizeDeps,
  state: ConversationState,
  userId: string,
  targetSeq: bigint,
  emoji: string,
): Promise<boolean> {
  const pending = state.reactions?.get(reactionKey(targetSeq, userId, emoji));
  if (pending) return pending.present;
  const { events } = await deps.store.readReactions({
    conversationId: state.conversationId,
    targetSeq,
    actorUserId: userId,
  });
  let has = false;
  for (const { kind } of events) {
    if (kind.case === "reactionAdded" && kind.value.emoji === emoji) has = true;
    if (kind.case === "reactionRemoved" && kind.value.emoji === emoji) has = false;
  }
  return has;
}

/**
 * The permission and consistency rules for every change. Runs inside the
 * conversation's queue, so `state` reflects every change sequenced before.
 */
export async function authorize(
  deps: AuthorizeDeps,
  actor: Actor,
  state: ConversationState,
  proposal: Event,
): Promise<Decision> {
  const k = proposal.kind;
  switch (k.case) {
    case "messagePosted": {
      let messageKind = MessageKind.USER;
      if (actor.partner) {
        messageKind = actor.userId ? MessageKind.BOT : MessageKind.SYSTEM;
        if (actor.userId) requireMember(state, actor.userId);
      } else {
        requireMember(state, actor.userId);
      }
      const reply = k.value.content?.replyToSeq ?? 0n;
      if (reply > state.lastSeq) throw fail.invalid("reply_to_seq is beyond the conversation");
      return {
        kind: {
          case: "messagePosted",
          // A literal, not create(): one per send (see "The send path" in docs/ARCHITECTURE.md).
          value: {
            $typeName: "chat.v1.MessagePosted",
            ...(k.value.content ? { content: k.value.content } : {}),
            messageKind,
          },
        },
        recipients: everyone(state),
      };
    }
    case "messageEdited": {
      const me = requireMember(state, actor.userId);
      const target = await targetMessage(deps, state, me.joinedSeq, k.value.targetSeq);
      if (target.actorUserId !== actor.userId) {
        throw fail.denied("only the sender can edit a message");
      }
      return { kind: k, recipients: everyone(state) };
    }
    case "messageDeleted": {
      const me = requireMember(state, actor.userId);
      const target = await targetMessage(deps, state, me.joinedSeq, k.value.targetSeq);
      const moderator = state.kind === ConversationKind.GROUP && me.role >= Role.ADMIN;
      if (target.actorUserId !== actor.userId && !moderator) {
        throw fail.denied("only the sender or a group admin can delete a message");
      }
      const targetSeq = k.value.targetSeq;
      return {
        kind: k,
        recipients: everyone(state),
        // Later changes must see the delete before the store does; once durable, the store
        // shows the target redacted.
        mutate: (s) => {
          s.deleted ??= new Set();
          s.deleted.add(targetSeq);
        },
        onDurable: (s) => {
          s.deleted?.delete(targetSeq);
        },
      };
    }
    case "reactionAdded":
    case "reactionRemoved": {
      const me = requireMember(state, actor.userId);
      const { targetSeq, emoji } = k.value;
      await targetMessage(deps, state, me.joinedSeq, targetSeq);
      // Each user has an emoji on a message at most once, so clients may count events.
      const adding = k.case === "reactionAdded";
      if ((await hasReaction(deps, state, actor.userId, targetSeq, emoji)) === adding) {
        throw fail.precondition(
          adding
            ? "already reacted to this message with this emoji"
            : "no such reaction of yours on this message",
        );
      }
      const key = reactionKey(targetSeq, actor.userId, emoji);
      return {
        kind: k,
        recipients: everyone(state),
        // Later changes must see this one before the store does.
        mutate: (s, seq) => {
          s.reactions ??= new Map();
          s.reactions.set(key, { present: adding, seq });
        },
        onDurable: (s, seq) => {
          if (s.reactions?.get(key)?.seq === seq) s.reactions.delete(key);
        },
      };
    }
    case "membersAdded": {
      requireGroup(state);
      const me = requireMember(state, actor.userId);
      if (me.role < Role.ADMIN) throw fail.denied("only admins can add members");
      const fresh = k.value.userIds.filter((u) => !state.members.has(u));
      if (fresh.length === 0) return { noop: true };
      if (state.members.size + fresh.length > deps.groupMaxMembers) {
        throw fail.exhausted(`a group holds at most ${deps.groupMaxMembers} members`);
      }
      const { users } = await deps.store.loadUsers({ userIds: fresh });
      if (users.length !== fresh.length) {
        const known = new Set(users.map((u) => u.userId));
        throw fail.notFound(`unknown user(s): ${fresh.filter((u) => !known.has(u)).join(", ")}`);
      }
      return {
        kind: {
          case: "membersAdded",
          value: create(MembersAddedSchema, { userIds: fresh, role: Role.MEMBER }),
        },
        recipients: [...everyone(state), ...fresh],
        mutate: (s, seq) => {
          for (const u of fresh) s.members.set(u, { role: Role.MEMBER, joinedSeq: seq });
        },
      };
    }
    case "memberRemoved": {
      requireGroup(state);
      const me = requireMember(state, actor.userId);
      const targetId = k.value.userId;
      const target = state.members.get(targetId);
      if (!target) throw fail.notFound("user is not a member");
      const leaving = targetId === actor.userId;
      if (leaving) {
        if (me.role === Role.OWNER && owners(state) === 1 && state.members.size > 1) {
          throw fail.precondition("the last owner must make someone else owner before leaving");
        }
      } else if (me.role < Role.ADMIN || (me.role === Role.ADMIN && target.role >= Role.ADMIN)) {
        throw fail.denied("not allowed to remove this member");
      }
      const recipients = everyone(state);
      return {
        kind: {
          case: "memberRemoved",
          value: create(MemberRemovedSchema, {
            userId: targetId,
            reason: leaving ? MemberRemovalReason.LEFT : MemberRemovalReason.REMOVED,
          }),
        },
        recipients,
        mutate: (s) => {
          s.members.delete(targetId);
        },
      };
    }
    case "memberRoleChanged": {
      requireGroup(state);
      const me = requireMember(state, actor.userId);
      if (me.role !== Role.OWNER) throw fail.denied("only owners can change roles");
      const { userId, role } = k.value;
      const target = state.members.get(userId);
      if (!target) throw fail.notFound("user is not a member");
      if (target.role === role) return { noop: true };
      if (target.role === Role.OWNER && owners(state) === 1) {
        throw fail.precondition("a group needs at least one owner");
      }
      return {
        kind: k,
        recipients: everyone(state),
        mutate: (s) => {
          const m = s.members.get(userId);
          if (m) m.role = role;
        },
      };
    }
    case "conversationRenamed": {
      requireGroup(state);
      const me = requireMember(state, actor.userId);
      if (me.role < Role.ADMIN) throw fail.denied("only admins can rename a group");
      return { kind: k, recipients: everyone(state) };
    }
    case "conversationCreated":
    case undefined:
      throw fail.invalid("not a change that can be applied to a conversation");
  }
}
