import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Config, type ConfigInput, toConfig } from "../../lib/config.js";
import { createRootLogger } from "../../lib/logger.js";
import { createEmbedded } from "../../services/embedded.js";

export const partner = { key: "test-partner", secret: "test-partner-secret-0123456789" };

export interface TestServer {
  url: string;
  port: number;
  dataDir: string;
  /** The server's own config: a value it reads per call can be changed past validation. */
  config: Config;
  app: ReturnType<typeof createEmbedded>;
  /** Stops the server (draining it); keeps the data directory. */
  stop(): Promise<void>;
  /** Stops and starts again on the same data directory. */
  restart(overrides?: ConfigInput): Promise<TestServer>;
  /** Stops and deletes the data directory. */
  destroy(): Promise<void>;
}

const merge = (a: ConfigInput, b: ConfigInput): ConfigInput => ({
  ...a,
  ...b,
  auth: { ...a.auth, ...b.auth },
  limits: { ...a.limits, ...b.limits },
  session: { ...a.session, ...b.session },
  sqlite: { ...a.sqlite, ...b.sqlite },
  metrics: { ...a.metrics, ...b.metrics },
  push: { ...a.push, ...b.push },
  redis: { ...a.redis, ...b.redis },
});

/**
 * Starts the embedded server on port 0 with a fresh data directory (or the
 * given one), dev mode on and one partner credential. Logging is silent
 * unless `logLevel` is overridden.
 */
export async function startServer(
  overrides: ConfigInput = {},
  dataDir = mkdtempSync(join(tmpdir(), "chat-test-")),
  deps: Omit<Parameters<typeof createEmbedded>[1], "logger"> = {},
): Promise<TestServer> {
  const input = merge(
    {
      port: 0,
      host: "127.0.0.1",
      dataDir,
      devMode: true,
      logLevel: "silent",
      partners: [partner],
      sqlite: { synchronous: "NORMAL" },
      metrics: { port: 0 },
    },
    overrides,
  );
  const config = toConfig(input);
  const app = createEmbedded(config, { ...deps, logger: createRootLogger(config.logLevel) });
  const address = await app.start();
  let stopped = false;
  const server: TestServer = {
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    dataDir,
    config,
    app,
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.stop();
    },
    async restart(more = {}) {
      await server.stop();
      return startServer(merge(overrides, more), dataDir, deps);
    },
    async destroy() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}
