import type { ConnectRouter } from "@connectrpc/connect";
import { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import type { EventStore } from "../../lib/backends/event-store.js";
import type { MessageLog } from "../../lib/backends/message-log.js";
import type { MetadataStore } from "../../lib/backends/metadata-store.js";
import type { Config } from "../../lib/config.js";
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
  return {
    routes(router: ConnectRouter) {
      router.service(StoreService, {
        ...historyRoutes(routeDeps),
        ...conversationRoutes(routeDeps),
        ...receiptRoutes(routeDeps),
        ...accountRoutes(routeDeps),
      });
    },
    async start() {
      const { metrics } = deps;
      deps.log.consume(async (batch) => {
        const verdicts = await deps.events.commit(batch);
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
