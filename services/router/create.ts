import { create } from "@bufbuild/protobuf";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { RouterService } from "../../gen/chat/internal/v1/router_service_pb.js";
import { ServerFrameSchema } from "../../gen/chat/v1/chat_service_pb.js";
import type { MessageLog } from "../../lib/backends/message-log.js";
import type { PushNotifier } from "../../lib/backends/push.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import type { Config } from "../../lib/config.js";
import { fail } from "../../lib/errors.js";
import type { Logger } from "../../lib/logger.js";
import type { Metrics } from "../../lib/metrics.js";
import { createConversationCache } from "./conversation-cache.js";
import { createFanout } from "./fanout.js";
import { routerLoggers } from "./logger.js";
import { createSendPath } from "./send-path.js";
import type { StoreClient } from "./store-client.js";
import { createTyping } from "./typing.js";

export interface RouterDeps {
  config: Config;
  log: MessageLog;
  store: StoreClient;
  soft: SoftState;
  push?: PushNotifier;
  logger: Logger;
  metrics: Metrics;
}

/**
 * The router: the send path (authorize, dedup, sequence, publish, fan out),
 * conversation creation, receipts fan-out and typing.
 */
export function createRouter(deps: RouterDeps) {
  const log = routerLoggers(deps.logger);
  const { limits, session } = deps.config;
  const cache = createConversationCache(deps.store, 50_000);
  const fanout = createFanout({
    soft: deps.soft,
    log: log.fanout,
    metrics: deps.metrics,
    retryForMs: session.fanoutRetryMs,
    ...(deps.push ? { push: deps.push } : {}),
  });
  const sendPath = createSendPath({
    log: deps.log,
    store: deps.store,
    soft: deps.soft,
    cache,
    fanout,
    groupMaxMembers: limits.groupMaxMembers,
    logger: log.send,
  });
  const typing = createTyping({
    cache,
    fanout,
    limiter: deps.soft.limiter,
    ttlMs: session.typingTtlMs,
    perSecond: limits.typingPerSecond,
    burst: limits.typingBurst,
  });

  const impl: ServiceImpl<typeof RouterService> = {
    async apply(req) {
      if (!req.actor || !req.proposal) throw fail.invalid("actor and proposal are required");
      return sendPath.apply(req.actor, req.proposal);
    },
    async openConversation(req) {
      if (!req.actor) throw fail.invalid("actor is required");
      return sendPath.openConversation(
        req.actor,
        req.kind,
        req.title,
        req.memberUserIds,
        req.clientRequestId,
      );
    },
    async updateReceipt(req) {
      const actor = req.actor;
      if (!actor) throw fail.invalid("actor is required");
      const { receipt, changed } = await deps.store.applyReceipt({
        userId: actor.userId,
        deviceId: actor.deviceId,
        conversationId: req.conversationId,
        deliveredSeq: req.deliveredSeq,
        readSeq: req.readSeq,
      });
      if (changed && receipt) {
        const state = await cache.get(req.conversationId);
        // Large groups learn receipts on demand (GetReadReceipts); the
        // reader's own devices always hear, to keep unread counts in step.
        const recipients =
          state && state.members.size <= limits.receiptFanoutMaxMembers
            ? cache.memberIds(state)
            : [actor.userId];
        await fanout.deliverDurable(
          create(ServerFrameSchema, { frame: { case: "receipt", value: receipt } }),
          recipients,
        );
      }
      return receipt ? { receipt } : {};
    },
    async signalTyping(req) {
      if (!req.actor) throw fail.invalid("actor is required");
      await typing.signal(req.actor, req.conversationId, req.typing);
      return {};
    },
  };

  return {
    routes(router: ConnectRouter) {
      router.service(RouterService, impl);
    },
    async start() {},
    /** Waits for in-flight changes to become durable and be fanned out. */
    async stop() {
      typing.stop();
      // What is left to fan out goes once more; a soft state still away leaves it to sync.
      fanout.stop();
      await sendPath.idle();
      await deps.push?.close();
    },
  };
}
