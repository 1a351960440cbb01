import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";

const dirs: string[] = [];
const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Runs the entrypoint with `env` until it exits by itself: its code and what it printed. */
function run(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), "chat-entry-"));
  dirs.push(dataDir);
  const child = spawn(process.execPath, ["--import", "tsx", "services/main.ts"], {
    env: { PATH: process.env.PATH ?? "", CHAT_DATA_DIR: dataDir, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (c) => {
    output += c;
  });
  child.stderr.on("data", (c) => {
    output += c;
  });
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, output })));
}

describe("the entrypoint", () => {
  it("refuses an invalid configuration in one line naming the setting, and exits 1", async () => {
    const noKey = await run({});
    expect(noKey.code).toBe(1);
    expect(noKey.output.trim()).toBe(
      "chat server: invalid configuration: no token signing key: set CHAT_AUTH_SIGNING_KEYS (kid:base64secret) or run with CHAT_DEV_MODE=true",
    );
    const level = await run({ CHAT_DEV_MODE: "true", CHAT_LOG_LEVEL: "verbose" });
    expect(level.code).toBe(1);
    // The field, and the variable that sets it.
    expect(level.output).toMatch(
      /^chat server: invalid configuration: logLevel \(CHAT_LOG_LEVEL\) must be one of /,
    );
    expect(level.output).not.toMatch(/\n\s+at /);
    // A file the settings name is checked at start, before anything opens.
    const fcm = await run({
      CHAT_DEV_MODE: "true",
      CHAT_PUSH_FCM_CREDENTIALS_FILE: join(tmpdir(), "no-such-service-account.json"),
    });
    expect(fcm.code).toBe(1);
    // Its one line, among the log lines (pino writes them asynchronously, so in any order).
    expect(fcm.output.split("\n")).toContain(
      "chat server: invalid configuration: push.fcmCredentialsFile (CHAT_PUSH_FCM_CREDENTIALS_FILE) is not a readable JSON file",
    );
    expect(fcm.output).not.toContain("using the dev signing key");
    expect(fcm.output).not.toMatch(/\n\s+at /);
  });

  it("exits 1 by itself, saying why, when its port is taken", async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    const res = await run({
      CHAT_DEV_MODE: "true",
      CHAT_PORT: String(port),
      CHAT_METRICS_ENABLED: "false",
    });
    expect(res.code).toBe(1);
    expect(res.output).toContain("chat server could not start");
    expect(res.output).toContain("EADDRINUSE");
  });
});
