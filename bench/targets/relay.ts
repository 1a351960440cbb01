import { join } from "node:path";
import { forkTs, makeRpc, rssOf, waitExit } from "../lib/procs.js";

export interface RelayTarget {
  name: "relay";
  host: string;
  port: number;
  pid: number;
  rssAfterGc(): Promise<number>;
  rss(): number;
  stop(): Promise<void>;
}

/** Starts the raw relay (see relay-server.ts) in a child process. */
export async function startRelay(): Promise<RelayTarget> {
  const child = forkTs(join(import.meta.dirname, "relay-server.ts"), [], {
    execArgv: ["--expose-gc"],
  });
  const rpc = makeRpc(child);
  const { port, pid } = await rpc<{ port: number; pid: number }>("start");
  return {
    name: "relay",
    host: "127.0.0.1",
    port,
    pid,
    rssAfterGc: () => rpc<number>("gc"),
    rss: () => rssOf(pid),
    async stop() {
      await rpc("stop").catch(() => undefined);
      await waitExit(child, 5000);
    },
  };
}
