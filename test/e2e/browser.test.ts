import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { build } from "esbuild";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ChatTest, StreamState, WebProtocol } from "../browser/app.js";
import { login, settle } from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

/*
 * The browser path in a real headless Chromium: the bundled test/browser/app.ts
 * is served from its own origin (another port, so every call is
 * cross-origin) and talks to the chat server with connect-web over fetch.
 */

const chromiumPath = "/usr/bin/chromium";
const root = resolve(import.meta.dirname, "../..");

let bundle = "";
let browser: Browser | undefined;
let server: TestServer | undefined;
const sites: http.Server[] = [];
const pages: Page[] = [];

beforeAll(async () => {
  const out = await build({
    entryPoints: [resolve(root, "test/browser/app.ts")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    logLevel: "silent",
  });
  bundle = out.outputFiles[0]!.text;
}, 60_000);

/** Launches Chromium once; every test fails (rather than skips) when it is not installed. */
async function ensureBrowser(): Promise<Browser> {
  if (!existsSync(chromiumPath)) {
    throw new Error(
      `Chromium is missing at ${chromiumPath}; the browser tests need it. Install it as root with ` +
        "`apt-get update && apt-get install -y --no-install-recommends chromium` " +
        "(or run scripts/install-chromium.sh).",
    );
  }
  browser ??= await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return browser;
}

afterAll(async () => {
  await browser?.close();
});

afterEach(async () => {
  for (const p of pages.splice(0)) await p.close();
  for (const s of sites.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  await server?.destroy();
  server = undefined;
});

/** Serves the page and the bundle on its own port; returns the page's origin. */
async function startSite(): Promise<string> {
  const site = http.createServer((req, res) => {
    if (req.url === "/app.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(bundle);
    } else if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(
        '<!doctype html><title>chat test</title><script type="module" src="/app.js"></script>',
      );
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => site.listen(0, "127.0.0.1", r));
  sites.push(site);
  return `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
}

interface OpenPage {
  page: Page;
  /** The page's console output (Chromium reports CORS refusals there). */
  logs: string[];
  /** Runs `fn(chatTest, arg)` in the page; `fn` travels as source, so it may use only its arguments. */
  app<A, T>(fn: (app: ChatTest, arg: A) => T | Promise<T>, arg: A): Promise<T>;
  /** Polls the page's Subscribe state until `pred` holds. */
  until(pred: (s: StreamState) => boolean, what: string): Promise<StreamState>;
}

async function openPage(origin: string): Promise<OpenPage> {
  const page = await (await ensureBrowser()).newPage();
  pages.push(page);
  const logs: string[] = [];
  page.on("console", (m) => logs.push(m.text()));
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => "chatTest" in globalThis, undefined, { timeout: 10_000 });
  const app = <A, T>(fn: (app: ChatTest, arg: A) => T | Promise<T>, arg: A) =>
    page.evaluate(
      ([src, a]) =>
        new Function("app", "arg", `return (${src})(app, arg);`)(
          (globalThis as unknown as { chatTest: unknown }).chatTest,
          a,
        ) as T,
      [fn.toString(), arg] as const,
    );
  return {
    page,
    logs,
    app,
    async until(pred, what) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const s = await app((a) => a.state(), null);
        if (pred(s)) return s;
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

describe.each<WebProtocol>(["connect", "grpc-web"])("browser over %s", (protocol) => {
  it("subscribes, sends with unary calls, and receives its own and a peer's messages once", async () => {
    const origin = await startSite();
    server = await startServer({ corsOrigins: [origin] });
    const bob = await login(server, "bob");
    const web = await openPage(origin);

    const target: [string, WebProtocol] = [server.url, protocol];
    const me = await web.app((a, [url, p]) => a.login(url, p, "alice"), target);
    expect(me).toEqual({ userId: "alice", deviceId: "alice-dev" });
    const id = await web.app((a, peer) => a.direct(peer), "bob");
    expect(id).toMatch(/^c_/);
    await web.app((a) => a.subscribe(), null);
    await web.until((s) => s.frames.includes("syncComplete"), "sync_complete");

    const sent = await web.app((a, c) => a.send(c, "web-1", "from the browser"), id);
    expect(sent).toEqual({ seq: "2", duplicate: false });
    await bob.chat.send({
      conversationId: id,
      clientMsgId: "node-1",
      content: { text: "from node" },
    });
    const s = await web.until((st) => st.events.some((e) => e.seq === "3"), "the peer's message");
    await settle(300);
    const final = await web.app((a) => a.state(), null);
    expect(final.error).toBeUndefined();
    expect(final.frames[0]).toBe("ready");
    expect(final.events.map((e) => [e.frame, e.seq, e.actor, e.text])).toEqual([
      ["sync", "1", "alice", ""],
      ["event", "2", "alice", "from the browser"],
      ["event", "3", "bob", "from node"],
    ]);
    expect(s.ended).toBe(false);

    // And the browser's message reached the Node-side peer.
    const history = await bob.chat.getHistory({ conversationId: id });
    expect(history.events.map((e) => e.clientMsgId)).toEqual(["", "web-1", "node-1"]);
    await web.app((a) => a.stop(), null);
  });
});

it("refuses calls from a page whose origin is not allowed", async () => {
  const allowed = await startSite();
  const other = await startSite();
  server = await startServer({ corsOrigins: [allowed] });
  const good = await openPage(allowed);
  const bad = await openPage(other);
  for (const protocol of ["connect", "grpc-web"] as const) {
    const args: [string, WebProtocol] = [server.url, protocol];
    const ok = await good.app((a, [u, p]) => a.probe(u, p), args);
    expect(ok).toEqual({ ok: true, code: "", message: "" });
    const refused = await bad.app((a, [u, p]) => a.probe(u, p), args);
    // fetch itself fails: the browser never hands the response to the page.
    expect(refused.ok).toBe(false);
    expect(refused.message).toMatch(/Failed to fetch/);
  }
  expect(bad.logs.some((m) => m.includes("blocked by CORS policy"))).toBe(true);
  expect(good.logs.some((m) => m.includes("CORS"))).toBe(false);
});
