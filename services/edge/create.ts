import { setMaxListeners } from "node:events";
import type net from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { ChatService } from "../../gen/chat/v1/chat_service_pb.js";
import { DevService } from "../../gen/chat/v1/dev_service_pb.js";
import { PartnerService } from "../../gen/chat/v1/partner_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { createPartnerAuth } from "../../lib/auth/partner.js";
import type { TokenService } from "../../lib/auth/tokens.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import type { Config } from "../../lib/config.js";
import { ServerStoppingError, toConnectError } from "../../lib/errors.js";
import { boundaryInterceptor } from "../../lib/interceptors.js";
import type { Logger } from "../../lib/logger.js";
import { type Metrics, metricsInterceptor } from "../../lib/metrics.js";
import type { StoreClient } from "../router/store-client.js";
import { createActions, type RouterClient } from "./actions.js";
import {
  authInterceptor,
  createDeviceCheck,
  requestBudget,
  requestLimitInterceptor,
} from "./auth.js";
import type { EdgeContext } from "./context.js";
import { createGrpcSessionEndpoint } from "./grpc-session.js";
import { edgeLoggers } from "./logger.js";
import { createPresence } from "./presence.js";
import { conversationRoutes } from "./routes/conversations.js";
import { devRoutes } from "./routes/dev.js";
import { deviceRoutes } from "./routes/devices.js";
import { createHealth } from "./routes/health.js";
import { messageRoutes } from "./routes/messages.js";
import { partnerRoutes } from "./routes/partner.js";
import { receiptRoutes } from "./routes/receipts.js";
import { sessionRoutes } from "./routes/session.js";
import { createHttpServer } from "./server.js";
import { createSessions } from "./sessions.js";
import { createWebSocketEndpoint } from "./websocket.js";

export interface EdgeDeps {
  config: Config;
  /** Unique per edge process; the registry maps devices to it. */
  edgeId: string;
  router: RouterClient;
  store: StoreClient;
  soft: SoftState;
  tokens: TokenService;
  logger: Logger;
  metrics: Metrics;
}

/**
 * The edge: client sessions and the public API (ChatService, PartnerService,
 * DevService in dev mode, grpc.health.v1.Health) on one port. It reaches the
 * router and the store only through their Connect clients.
 */
export function createEdge(deps: EdgeDeps) {
  const { config } = deps;
  const log = edgeLoggers(deps.logger);
  const devices = createDeviceCheck(deps.store);
  const presence = createPresence({
    soft: deps.soft,
    store: deps.store,
    ttlMs: config.session.presenceTtlMs,
    watchMax: config.limits.presenceWatchMax,
    log: log.presence,
  });
  const sessions = createSessions({
    edgeId: deps.edgeId,
    config,
    soft: deps.soft,
    store: deps.store,
    presence,
    devices,
    log: log.session,
    metrics: deps.metrics,
  });
  const actions = createActions({
    router: deps.router,
    store: deps.store,
    soft: deps.soft,
    limits: config.limits,
    presence,
    sessions,
  });
  const ctx: EdgeContext = {
    config,
    router: deps.router,
    store: deps.store,
    soft: deps.soft,
    tokens: deps.tokens,
    actions,
    sessions,
    presence,
    devices,
    log: log.rpc,
  };
  const served = [ChatService, PartnerService, ...(config.devMode ? [DevService] : [])];
  const health = createHealth(served.map((s) => s.typeName));
  const shutdown = new AbortController();
  // Every in-flight call links its own signal to this one; the default cap of 10 would warn.
  setMaxListeners(0, shutdown.signal);
  const routes = (router: ConnectRouter) => {
    router.service(ChatService, {
      ...sessionRoutes(ctx),
      ...messageRoutes(ctx),
      ...conversationRoutes(ctx),
      ...receiptRoutes(ctx),
      ...deviceRoutes(ctx),
    });
    router.service(PartnerService, partnerRoutes(ctx));
    if (config.devMode) router.service(DevService, devRoutes(ctx));
    router.service(Health, health.routes);
  };
  const websocket = createWebSocketEndpoint(ctx);
  const grpcSessions = createGrpcSessionEndpoint(ctx, deps.metrics, log.rpc);
  const server = createHttpServer({
    config,
    routes,
    interceptors: [
      metricsInterceptor(deps.metrics),
      boundaryInterceptor(log.rpc),
      authInterceptor({
        tokens: deps.tokens,
        partners: createPartnerAuth(config.partners),
        devices,
      }),
      requestLimitInterceptor(requestBudget(deps.soft.limiter, config.limits)),
    ],
    shutdownSignal: shutdown.signal,
    onUpgrade: (req, socket, head) => void websocket.upgrade(req, socket, head),
    direct: grpcSessions,
    isServing: () => health.serving,
    log: log.http,
  });
  let address: net.AddressInfo | undefined;

  return {
    routes,
    /** Starts sessions and listens; resolves to the bound address. */
    async start(): Promise<net.AddressInfo> {
      await sessions.start();
      address = await server.listen(config.host, config.port);
      log.http.info({ host: address.address, port: address.port }, "edge listening");
      return address;
    },
    /** Turns health NOT_SERVING, ends streams with UNAVAILABLE and drains connections. */
    async stop() {
      health.setServing(false);
      const err = toConnectError(new ServerStoppingError());
      // Sessions first, so their clients see UNAVAILABLE and reconnect elsewhere.
      // One line for all of them: each call ended this way is logged at debug only.
      log.session.info({ sessions: sessions.count }, "ending sessions: server is shutting down");
      await sessions.stop(err);
      shutdown.abort(err);
      websocket.close();
      await server.close();
    },
    get address() {
      return address;
    },
    get sessionCount() {
      return sessions.count;
    },
  };
}
