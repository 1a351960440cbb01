import type { Logger } from "../../lib/logger.js";

/** Named loggers of the router service. */
export const routerLoggers = (root: Logger) => ({
  send: root.child({ name: "router.send" }),
  fanout: root.child({ name: "router.fanout" }),
  rpc: root.child({ name: "router.rpc" }),
});
