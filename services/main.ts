import type { AddressInfo } from "node:net";
import { readEnv, toConfig, withVariables } from "../lib/config.js";
import { ConfigError } from "../lib/errors.js";
import { createRootLogger } from "../lib/logger.js";
import { createCore } from "./core.js";
import { createEdgeNode } from "./edge-node.js";
import { createEmbedded } from "./embedded.js";

/** Runs the server until SIGINT or SIGTERM; resolves false when it could not start. */
async function main(): Promise<boolean> {
  let config: ReturnType<typeof toConfig>;
  try {
    config = toConfig(readEnv());
  } catch (err) {
    // A setting to fix, said once, without a stack trace around it.
    if (!(err instanceof ConfigError)) throw err;
    console.error(`chat server: invalid configuration: ${withVariables(err.message)}`);
    return false;
  }
  const logger = createRootLogger(config.logLevel);
  if (config.devMode) {
    logger.warn("DEV MODE: DevService issues tokens for any user name; never expose this server");
  }
  let app: { start(): Promise<AddressInfo>; stop(): Promise<void> };
  try {
    app =
      config.role === "core"
        ? createCore(config, { logger })
        : config.role === "edge"
          ? createEdgeNode(config, { logger })
          : createEmbedded(config, { logger });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`chat server: invalid configuration: ${withVariables(err.message)}`);
    return false;
  }
  let address: Awaited<ReturnType<typeof app.start>>;
  try {
    address = await app.start();
  } catch (err) {
    // A port in use is the common case; the error names the address.
    logger.fatal({ err }, "chat server could not start");
    await app.stop().catch(() => undefined);
    return false;
  }
  logger.info({ role: config.role }, `chat server ready on ${address.address}:${address.port}`);

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
  return true;
}

if (!(await main())) process.exitCode = 1;
