import type { ConnectRouter, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { EventStore } from "../../lib/backends/event-store.js";
import type { MessageLog } from "../../lib/backends/message-log.js";
import type { MetadataStore } from "../../lib/backends/metadata-store.js";
import type { Config } from "../../lib/config.js";
import { DuplicateEventError, SeqConflictError } from "../../lib/errors.js";
import type { Logger } from "../../lib/logger.js";
import type { Metrics } from "../../lib/metrics.js";
import { storeLoggers } from "./logger.js";
import { accountRoutes } from "./routes/accounts.js";
import { conversationRoutes } from "./routes/conversations.js";
import { historyRoutes } from "./routes/history.js";
import { receiptRoutes } from "./routes/receipts.js";

export interface StoreServiceDeps {
  config: Config;
  log: MessageLog;
  events: EventStore;
  metadata: MetadataStore;
  logger: Logger;
  metrics: Metrics;
}

/**
 * What each store call waits for when the log acknowledges before the store
 * commits: the store to consume one conversation's appends, everyone's, or
 * nothing (accounts are not in the log; key lookups are not either, since
 * the router asks the log for unconsumed keys). Typed so that a new call
 * cannot go unclassified.
 */
const waitsFor: Record<keyof ServiceImpl<typeof StoreService>, "one" | "all" | "none"> = {
  readHistory: "one",
  readSync: "all",
  readEvent: "one",
  findEvent: "none",
  readReactions: "one",
  loadConversation: "one",
  loadConversations: "all",
  loadMembership: "one",
  findConversation: "all",
  applyReceipt: "one",
  loadReadReceipts: "one",
  filterPeers: "all",
  putUser: "none",
  loadUsers: "none",
  ensureDevice: "none",
  updateDevice: "none",
  loadDevice: "none",
  loadDevices: "none",
  revokeDevice: "none",
  loadPushTargets: "none",
  forgetPushToken: "none",
};

type Method = (req: { conversationId?: string }, ctx: HandlerContext) => Promise<unknown>;

/**
 * Makes every read wait until the store has consumed what this process
 * appended to the log before the call (for a log that acknowledges before the
 * store commits): a sender's receipt, history or sync never misses, or is
 * refused for, a change already acknowledged to someone.
 */
function afterTheLog<T extends object>(impl: T, log: MessageLog): T {
  if (log.judges) return impl;
  return Object.fromEntries(
    Object.entries(impl).map(([name, fn]) => {
      const method = fn as Method;
      const scope = waitsFor[name as keyof typeof waitsFor];
      if (scope === "none") return [name, method];
      const waiting: Method = async (req, ctx) => {
        await log.caughtUp(scope === "one" ? req.conversationId : undefined);
        return method(req, ctx);
      };
      return [name, waiting];
    }),
  ) as T;
}

/**
 * The store: consumes the message log into the event store (one commit per
 * batch) and serves history, sync, conversations, receipts and accounts.
 */
export function createStore(deps: StoreServiceDeps) {
  const log = storeLoggers(deps.logger);
  const routeDeps = {
    events: deps.events,
    metadata: deps.metadata,
    syncLimit: deps.config.session.syncLimit,
  };
  const impl = afterTheLog(
    {
      ...historyRoutes(routeDeps),
      ...conversationRoutes(routeDeps),
      ...receiptRoutes(routeDeps),
      ...accountRoutes(routeDeps),
    },
    deps.log,
  );

  /**
   * Refusals of events stored already: a log that redelivers what it was not
   * told is consumed (after a reconnect or a restart) hands them over again.
   */
  const storedAlready = async (batch: Event[], verdicts: (Error | undefined)[]) => {
    await Promise.all(
      verdicts.map(async (v, i) => {
        if (!(v instanceof SeqConflictError || v instanceof DuplicateEventError)) return;
        const ev = batch[i]!;
        const stored = await deps.events.readEvent(ev.conversationId, ev.seq);
        if (stored?.eventId === ev.eventId) verdicts[i] = undefined;
      }),
    );
  };

  return {
    routes(router: ConnectRouter) {
      router.service(StoreService, impl);
    },
    async start() {
      const { metrics } = deps;
      deps.log.consume(async (batch) => {
        const verdicts = await deps.events.commit(batch);
        if (!deps.log.judges) await storedAlready(batch, verdicts);
        metrics.batchSize.observe(batch.length);
        batch.forEach((ev, i) => {
          const refused = verdicts[i];
          if (refused) metrics.refused.inc({ reason: refused.name });
          else metrics.committed.inc({ kind: ev.kind.case ?? "unknown" });
        });
        log.consumer.trace({ events: batch.length }, "committed batch");
        return verdicts;
      });
    },
    async stop() {
      await deps.log.close();
    },
  };
}
