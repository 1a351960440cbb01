import type { ServiceImpl } from "@connectrpc/connect";
import type { StoreService } from "../../../gen/chat/internal/v1/store_service_pb.js";
import { fail } from "../../../lib/errors.js";
import { conversationView, memberView, requireMember, type StoreDeps } from "../views.js";

/** A list position: the last conversation given, and the activity revision it was read at. */
const encodeToken = (lastActivityMs: number, conversationId: string, rev: bigint) =>
  Buffer.from(`${lastActivityMs}:${conversationId}:${rev}`).toString("base64url");

/** Revisions are SQLite integers. */
const maxRev = 2n ** 63n - 1n;

const decodeToken = (token: string) => {
  const [ms, id, rev] = Buffer.from(token, "base64url").toString("utf8").split(":");
  const lastActivityMs = Number(ms);
  if (
    !id ||
    !Number.isSafeInteger(lastActivityMs) ||
    (rev !== undefined && (!/^\d{1,19}$/.test(rev) || BigInt(rev) > maxRev))
  ) {
    throw fail.invalid("page_token is invalid");
  }
  return { lastActivityMs, conversationId: id, ...(rev !== undefined ? { rev: BigInt(rev) } : {}) };
};

/** Conversation views for members, and the router's membership view. */
export const conversationRoutes = (
  deps: StoreDeps,
): Pick<
  ServiceImpl<typeof StoreService>,
  "loadConversation" | "loadConversations" | "loadMembership" | "findConversation" | "filterPeers"
> => ({
  async loadConversation(req) {
    const { conversation, member } = await requireMember(
      deps,
      req.viewerUserId,
      req.conversationId,
    );
    return { conversation: await conversationView(deps, conversation, member, true) };
  },

  async loadConversations(req) {
    const after = req.pageToken ? decodeToken(req.pageToken) : undefined;
    const { moved, below, rev } = await deps.metadata.listUserConversations(
      req.viewerUserId,
      req.pageSize + 1,
      after,
    );
    // What moved ahead of the position since the last page comes first; it
    // would otherwise never be listed, or show its activity from before.
    const rest = below.slice(0, req.pageSize);
    const conversations = await Promise.all(
      [...moved, ...rest].map((r) => conversationView(deps, r.conversation, r.member, false)),
    );
    // More below the position, or more that moved than one read returns.
    const more = below.length > req.pageSize || moved.length > req.pageSize;
    const last = rest.at(-1)?.conversation ?? after;
    return {
      conversations,
      nextPageToken: more && last ? encodeToken(last.lastActivityMs, last.conversationId, rev) : "",
    };
  },

  async loadMembership(req) {
    const conversation = await deps.metadata.getConversation(req.conversationId);
    if (!conversation) return { found: false };
    const members = await deps.metadata.listMembers(req.conversationId);
    return {
      found: true,
      kind: conversation.kind,
      headSeq: conversation.headSeq,
      members: members.map(memberView),
    };
  },

  async findConversation(req) {
    const key = req.key;
    let id: string | undefined;
    if (key.case === "direct")
      id = await deps.metadata.findDirect(key.value.userA, key.value.userB);
    else if (key.case === "group") {
      id = await deps.metadata.findGroupRequest(key.value.creatorUserId, key.value.clientRequestId);
    }
    return { conversationId: id ?? "" };
  },

  async filterPeers(req) {
    return { userIds: await deps.metadata.sharedPeers(req.userId, req.candidateUserIds) };
  },
});
