import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type {
  ReadHistoryRequest,
  ReadSyncRequest,
  StoreService,
} from "../../../gen/chat/internal/v1/store_service_pb.js";
import {
  type ConversationCursor,
  ConversationCursorSchema,
  SyncBatchSchema,
} from "../../../gen/chat/v1/model_pb.js";
import { CursorRangeError } from "../../../lib/errors.js";
import { storedEventSeq } from "../../../lib/event-bytes.js";
import { requireMembership, type StoreDeps } from "../views.js";

/** Reads of a conversation's events in one form: decoded, or as stored. */
interface PageReads<T> {
  after(conversationId: string, afterSeq: bigint, limit: number): Promise<T[]>;
  before(conversationId: string, beforeSeq: bigint, minSeq: bigint, limit: number): Promise<T[]>;
}

/**
 * One page of history from the request's anchor, never below the viewer's
 * `floor` (the seq that made them a member) nor above `headSeq`, ascending
 * by seq.
 */
async function readPage<T>(
  req: ReadHistoryRequest,
  floor: bigint,
  headSeq: bigint,
  reads: PageReads<T>,
): Promise<{ page: T[]; hasMore: boolean }> {
  const limit = req.limit;
  if (req.backward) {
    if (req.anchorSeq > headSeq + 1n) {
      throw new CursorRangeError("anchor_seq is beyond the conversation's head");
    }
    // Bounded by the head read before, not the stored one: for a former
    // member that is its removal, and nothing after it may be served.
    const before = req.anchorSeq === 0n ? headSeq + 1n : req.anchorSeq;
    const page = await reads.before(req.conversationId, before, floor, limit + 1);
    const hasMore = page.length > limit;
    return { page: hasMore ? page.slice(1) : page, hasMore };
  }
  if (req.anchorSeq > headSeq) {
    throw new CursorRangeError("anchor_seq is beyond the conversation's head");
  }
  const after = req.anchorSeq >= floor ? req.anchorSeq : floor - 1n;
  // Seqs are contiguous, so counting up to the head keeps the page at or below it.
  const upToHead = headSeq - after;
  const want = upToHead > BigInt(limit) ? limit + 1 : Number(upToHead);
  if (want <= 0) return { page: [], hasMore: false };
  const page = await reads.after(req.conversationId, after, want);
  const hasMore = page.length > limit;
  return { page: hasMore ? page.slice(0, limit) : page, hasMore };
}

/** A sync batch of events in one form, before it becomes a message. */
interface Batch<T> {
  conversationId: string;
  events: T[];
  gap: boolean;
  gapAfterSeq: bigint;
  headSeq: bigint;
}

/**
 * The device's catch-up: for each conversation with news since its cursor
 * (given, else the device's stored one), the newest events up to the limit,
 * in a stable order so a caller can page on with the heads it got.
 */
async function readBatches<T>(
  deps: StoreDeps,
  req: ReadSyncRequest,
  before: PageReads<T>["before"],
  seqOf: (event: T) => bigint,
): Promise<{ batches: Batch<T>[]; baselines: ConversationCursor[]; hasMore: boolean }> {
  const limit = req.limitPerConversation || deps.syncLimit;
  const given = new Map(req.cursors.map((c) => [c.conversationId, c.seq]));
  const states = await deps.metadata.syncStates(req.viewerUserId, req.deviceId);
  const batches: Batch<T>[] = [];
  const baselines: ConversationCursor[] = [];
  const recentSince = Date.now() - req.baselineWindowMs;
  let total = 0;
  let hasMore = false;
  states.sort((a, b) => (a.conversationId < b.conversationId ? -1 : 1));
  for (const s of states) {
    const client = given.get(s.conversationId);
    // A left conversation is synced only up to the removal, and only for
    // devices that were following it.
    if (s.leftSeq !== undefined && client === undefined && s.deviceCursor === undefined) continue;
    const upper = s.leftSeq ?? s.headSeq;
    if (client !== undefined && client > s.headSeq) {
      throw new CursorRangeError(`cursor for ${s.conversationId} is beyond its head`);
    }
    let cursor = client ?? s.deviceCursor ?? s.joinedSeq - 1n;
    if (cursor < s.joinedSeq - 1n) cursor = s.joinedSeq - 1n;
    if (cursor >= upper) {
      if (req.baselineWindowMs > 0 && s.lastActivityMs >= recentSince) {
        baselines.push(
          create(ConversationCursorSchema, { conversationId: s.conversationId, seq: upper }),
        );
      }
      continue;
    }
    if (req.maxEvents > 0 && total >= req.maxEvents) {
      hasMore = true;
      continue;
    }
    const events = await before(s.conversationId, upper + 1n, cursor + 1n, limit);
    total += events.length;
    batches.push({
      conversationId: s.conversationId,
      events,
      gap: events.length > 0 && seqOf(events[0]!) > cursor + 1n,
      gapAfterSeq: cursor,
      headSeq: upper,
    });
  }
  return { batches, baselines, hasMore };
}

/** History paging, catch-up sync and single-event reads. */
export const historyRoutes = (
  deps: StoreDeps,
): Pick<
  ServiceImpl<typeof StoreService>,
  "readHistory" | "readSync" | "readEvent" | "findEvent" | "readReactions"
> => ({
  async readHistory(req) {
    const { conversation, member } = await requireMembership(
      deps,
      req.viewerUserId,
      req.conversationId,
    );
    // A former member reads what sync serves it: up to and including its removal.
    const headSeq = member.leftSeq ?? conversation.headSeq;
    if (req.encoded) {
      const { page, hasMore } = await readPage(req, member.joinedSeq, headSeq, {
        after: (...a) => deps.events.readAfterEncoded(...a),
        before: (...a) => deps.events.readBeforeEncoded(...a),
      });
      return { encodedEvents: page, hasMore, headSeq };
    }
    const { page, hasMore } = await readPage(req, member.joinedSeq, headSeq, {
      after: (...a) => deps.events.readAfter(...a),
      before: (...a) => deps.events.readBefore(...a),
    });
    return { events: page, hasMore, headSeq };
  },

  async readSync(req) {
    if (req.encoded) {
      const { batches, baselines, hasMore } = await readBatches(
        deps,
        req,
        (...a) => deps.events.readBeforeEncoded(...a),
        storedEventSeq,
      );
      return { encodedBatches: batches, baselines, hasMore };
    }
    const { batches, baselines, hasMore } = await readBatches(
      deps,
      req,
      (...a) => deps.events.readBefore(...a),
      (e) => e.seq,
    );
    return { batches: batches.map((b) => create(SyncBatchSchema, b)), baselines, hasMore };
  },

  async readEvent(req) {
    const event = await deps.events.readEvent(req.conversationId, req.seq);
    return event ? { event } : {};
  },

  async readReactions(req) {
    return {
      events: await deps.events.readReactions(req.conversationId, req.targetSeq, req.actorUserId),
    };
  },

  async findEvent(req) {
    const event = await deps.events.findByClientMsgId(
      req.conversationId,
      req.actorUserId,
      req.clientMsgId,
    );
    return event ? { event } : {};
  },
});
