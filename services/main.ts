import { readEnv, toConfig } from "../lib/config.js";
import { createRootLogger } from "../lib/logger.js";
import { createEmbedded } from "./embedded.js";

const config = toConfig(readEnv());
const logger = createRootLogger(config.logLevel);
if (config.devMode) {
  logger.warn("DEV MODE: DevService issues tokens for any user name; never expose this server");
}
const app = createEmbedded(config, { logger });
const address = await app.start();
logger.info(`chat server ready on ${address.address}:${address.port}`);

let stopping = false;
const shutdown = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "shutting down");
  app.stop().then(
    () => logger.info("stopped"),
    (err: unknown) => {
      logger.error({ err }, "shutdown failed");
      process.exitCode = 1;
    },
  );
};
process.on("SIGINT", () => shutdown("SIGINT"));
process.on("SIGTERM", () => shutdown("SIGTERM"));
