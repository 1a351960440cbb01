import { Worker } from "node:worker_threads";

/**
 * Starts a worker thread on `entry`, a module of this code base. A
 * TypeScript entry (running from source, as `npm start` and the tests do) is
 * loaded through tsx inside the thread, which a plain `new Worker` cannot do;
 * compiled JavaScript loads directly.
 */
export function startThread(entry: URL): Worker {
  if (!entry.pathname.endsWith(".ts")) return new Worker(entry);
  const tsxApi = import.meta.resolve("tsx/esm/api");
  const [api, href] = [JSON.stringify(tsxApi), JSON.stringify(entry.href)];
  const boot = `import(${api}).then((tsx) => tsx.tsImport(${href}, ${href}));`;
  return new Worker(boot, { eval: true });
}

/** The URL of a sibling module, with the caller's own extension (.ts from source, .js built). */
export function siblingModule(callerUrl: string, baseName: string): URL {
  const ext = callerUrl.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`./${baseName}${ext}`, callerUrl);
}
