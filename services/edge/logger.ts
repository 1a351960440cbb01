import type { Logger } from "../../lib/logger.js";

/** Named loggers of the edge service. */
export const edgeLoggers = (root: Logger) => ({
  rpc: root.child({ name: "edge.rpc" }),
  session: root.child({ name: "edge.session" }),
  http: root.child({ name: "edge.http" }),
  presence: root.child({ name: "edge.presence" }),
});
