import type { Logger } from "../../lib/logger.js";

/** Named loggers of the store service. */
export const storeLoggers = (root: Logger) => ({
  consumer: root.child({ name: "store.consumer" }),
  rpc: root.child({ name: "store.rpc" }),
});
