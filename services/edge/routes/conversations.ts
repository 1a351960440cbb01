import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { ActorSchema } from "../../../gen/chat/internal/v1/router_service_pb.js";
import type { ChatService } from "../../../gen/chat/v1/chat_service_pb.js";
import {
  ConversationKind,
  type EventSchema,
  MemberRemovalReason,
} from "../../../gen/chat/v1/event_pb.js";
import { fail } from "../../../lib/errors.js";
import {
  checkClientKey,
  checkConversationId,
  checkExternalId,
  checkName,
  checkUserIds,
  pageSize,
} from "../../../lib/validate.js";
import { actorOf } from "../actions.js";
import { type Caller, caller } from "../auth.js";
import type { EdgeContext } from "../context.js";
import { checkRole } from "../validate.js";

/** Opens a conversation through the router and returns it as the caller sees it. */
export async function openConversation(
  ctx: EdgeContext,
  actor: MessageInitShape<typeof ActorSchema>,
  viewerUserId: string,
  kind: ConversationKind,
  title: string,
  memberUserIds: string[],
  clientRequestId: string,
) {
  const { limits } = ctx.config;
  let members: string[];
  if (kind === ConversationKind.DIRECT) {
    const peer = memberUserIds.length === 1 ? memberUserIds[0]! : "";
    if (!peer) throw fail.invalid("a direct conversation has exactly one peer");
    checkExternalId("peer_user_id", peer);
    if (peer === viewerUserId) throw fail.invalid("a direct conversation needs another user");
    members = [peer];
  } else if (kind === ConversationKind.GROUP) {
    title = checkName("title", title, 256);
    checkClientKey("client_request_id", clientRequestId, false);
    members = checkUserIds("member_user_ids", memberUserIds, limits.groupMaxMembers).filter(
      (u) => u !== viewerUserId,
    );
    if (members.length + 1 > limits.groupMaxMembers) {
      throw fail.exhausted(`a group holds at most ${limits.groupMaxMembers} members`);
    }
  } else {
    throw fail.invalid("kind must be DIRECT or GROUP");
  }
  const wanted = [viewerUserId, ...members];
  const { users } = await ctx.store.loadUsers({ userIds: wanted });
  if (users.length !== wanted.length) {
    const known = new Set(users.map((u) => u.userId));
    throw fail.notFound(`unknown user(s): ${wanted.filter((u) => !known.has(u)).join(", ")}`);
  }
  const opened = await ctx.router.openConversation({
    actor,
    kind,
    title,
    memberUserIds: members,
    clientRequestId,
  });
  const { conversation } = await ctx.store.loadConversation({
    viewerUserId,
    conversationId: opened.conversationId,
  });
  return { conversation, created: opened.created };
}

/** Creating, reading and administering conversations. */
export const conversationRoutes = (
  ctx: EdgeContext,
): Pick<
  ServiceImpl<typeof ChatService>,
  | "createDirectConversation"
  | "createGroupConversation"
  | "getConversation"
  | "listConversations"
  | "addMembers"
  | "removeMember"
  | "setMemberRole"
  | "leaveConversation"
  | "renameConversation"
> => {
  const change = async (
    who: Caller,
    conversationId: string,
    kind: NonNullable<MessageInitShape<typeof EventSchema>["kind"]>,
    required: boolean,
  ) => {
    checkConversationId(conversationId);
    const res = await ctx.router.apply({ actor: actorOf(who), proposal: { conversationId, kind } });
    if (required && !res.event) throw fail.precondition("the change had no effect");
    return res.event ? { event: res.event } : {};
  };
  return {
    createDirectConversation(req, hctx) {
      const who = caller(hctx);
      return openConversation(
        ctx,
        actorOf(who),
        who.userId,
        ConversationKind.DIRECT,
        "",
        [req.peerUserId],
        "",
      );
    },

    createGroupConversation(req, hctx) {
      const who = caller(hctx);
      return openConversation(
        ctx,
        actorOf(who),
        who.userId,
        ConversationKind.GROUP,
        req.title,
        req.memberUserIds,
        req.clientRequestId,
      );
    },

    async getConversation(req, hctx) {
      checkConversationId(req.conversationId);
      const { conversation } = await ctx.store.loadConversation({
        viewerUserId: caller(hctx).userId,
        conversationId: req.conversationId,
      });
      return conversation ? { conversation } : {};
    },

    async listConversations(req, hctx) {
      if (req.pageToken.length > 512) throw fail.invalid("page_token is invalid");
      const res = await ctx.store.loadConversations({
        viewerUserId: caller(hctx).userId,
        pageSize: pageSize("page_size", req.pageSize, 50, 200),
        pageToken: req.pageToken,
      });
      return { conversations: res.conversations, nextPageToken: res.nextPageToken };
    },

    addMembers(req, hctx) {
      const ids = checkUserIds("user_ids", req.userIds, ctx.config.limits.groupMaxMembers);
      if (ids.length === 0) throw fail.invalid("user_ids is required");
      return change(
        caller(hctx),
        req.conversationId,
        {
          case: "membersAdded",
          value: { userIds: ids },
        },
        false,
      );
    },

    removeMember(req, hctx) {
      checkExternalId("user_id", req.userId);
      return change(
        caller(hctx),
        req.conversationId,
        {
          case: "memberRemoved",
          value: { userId: req.userId, reason: MemberRemovalReason.REMOVED },
        },
        true,
      );
    },

    setMemberRole(req, hctx) {
      checkExternalId("user_id", req.userId);
      checkRole(req.role);
      return change(
        caller(hctx),
        req.conversationId,
        {
          case: "memberRoleChanged",
          value: { userId: req.userId, role: req.role },
        },
        false,
      );
    },

    leaveConversation(req, hctx) {
      const who = caller(hctx);
      return change(
        who,
        req.conversationId,
        {
          case: "memberRemoved",
          value: { userId: who.userId, reason: MemberRemovalReason.LEFT },
        },
        true,
      );
    },

    renameConversation(req, hctx) {
      const title = checkName("title", req.title, 256);
      return change(
        caller(hctx),
        req.conversationId,
        {
          case: "conversationRenamed",
          value: { title },
        },
        true,
      );
    },
  };
};
