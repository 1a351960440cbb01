/**
 * Child process: the embedded default (edge, router, store on SQLite with
 * durable acks, or on Cassandra when configured) as `npm start` runs it,
 * with users provisioned up front; or
 * one process of a split deployment (the core, provisioned the same way, or
 * an edge). Driven by the bench over IPC.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import { type ConfigInput, toConfig } from "../../lib/config.js";
import { createRootLogger } from "../../lib/logger.js";
import { serveRpc } from "../lib/procs.js";

interface StartArgs {
  /** Role "core" or "edge" for one process of a split deployment; the config says which. */
  config: ConfigInput;
  /** Users u0..u{n-1}, each with device d-u<i>. */
  users: number;
  /** Another checkout's root, to measure an older revision with the same bench. */
  serverRoot?: string;
}

type Embedded = {
  start(): Promise<{ port: number }>;
  stop(): Promise<void>;
};
let app: Embedded | undefined;

type OpenStore = typeof import("../../lib/backends/sqlite/sqlite-store.js").openSqliteStore;
type StoresFrom = typeof import("../../services/parts.js").eventsAndMetadataFrom;
type Config = ReturnType<typeof toConfig>;

/** The server's own store, opened as the server opens it: SQLite in the data dir, or Cassandra. */
async function openStore(root: string, config: Config) {
  if (config.cassandra.contactPoints.length > 0) {
    const { eventsAndMetadataFrom } = (await import(
      pathToFileURL(join(root, "services/parts.ts")).href
    )) as { eventsAndMetadataFrom: StoresFrom };
    const stores = eventsAndMetadataFrom(config);
    await stores.open();
    return { metadata: stores.metadata, close: () => stores.close(), chunk: 200 };
  }
  const { openSqliteStore } = (await import(
    pathToFileURL(join(root, "lib/backends/sqlite/sqlite-store.ts")).href
  )) as { openSqliteStore: OpenStore };
  // Provisioning is setup, not load: no fsync per row. The server itself runs synchronous=FULL.
  const store = openSqliteStore({ path: join(config.dataDir, "chat.db"), synchronous: "NORMAL" });
  return { metadata: store, close: () => store.close(), chunk: 1000 };
}

async function provision(root: string, config: Config, users: number) {
  const store = await openStore(root, config);
  // Writes issued together commit together (the SQLite writer batches what is queued).
  for (let from = 0; from < users; from += store.chunk) {
    const chunk: Promise<unknown>[] = [];
    for (let i = from; i < Math.min(users, from + store.chunk); i++) {
      chunk.push(
        store.metadata
          .putUser(`u${i}`, `u${i}`, false)
          .then(() => store.metadata.ensureDevice(`u${i}`, `d-u${i}`, DevicePlatform.UNSPECIFIED)),
      );
    }
    await Promise.all(chunk);
  }
  await store.close();
}

serveRpc({
  async start(args: StartArgs) {
    // Key secrets cross IPC as base64 (structured JSON would mangle a Uint8Array).
    const auth = args.config.auth ?? {};
    const signingKeys = (auth.signingKeys ?? []).map((k) => ({
      kid: k.kid,
      secret: Buffer.from(k.secret as unknown as string, "base64"),
    }));
    const config = toConfig({ ...args.config, auth: { ...auth, signingKeys } });
    const root = args.serverRoot ?? join(import.meta.dirname, "../..");
    // An edge of a split keeps no data: the core's store holds the users.
    if (config.role !== "edge") await provision(root, config, args.users);
    const logger = createRootLogger(config.logLevel);
    if (config.role === "core") {
      const mod = (await import(pathToFileURL(join(root, "services/core.ts")).href)) as {
        createCore: (c: unknown, d: unknown) => Embedded;
      };
      app = mod.createCore(config, { logger });
    } else if (config.role === "edge") {
      const mod = (await import(pathToFileURL(join(root, "services/edge-node.ts")).href)) as {
        createEdgeNode: (c: unknown, d: unknown) => Embedded;
      };
      app = mod.createEdgeNode(config, { logger });
    } else {
      const mod = (await import(pathToFileURL(join(root, "services/embedded.ts")).href)) as {
        createEmbedded: (c: unknown, d: unknown) => Embedded;
      };
      app = mod.createEmbedded(config, { logger });
    }
    const address = await app.start();
    return { port: address.port, pid: process.pid };
  },
  gc() {
    globalThis.gc?.();
    return process.memoryUsage().rss;
  },
  async stop() {
    await app?.stop();
    app = undefined;
    setImmediate(() => process.exit(0));
    return true;
  },
});
