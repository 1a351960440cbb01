import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { connectXmpp, type XmppConn } from "../../bench/clients/xmpp-client.js";
import {
  type EjabberdTarget,
  ejabberdAvailable,
  startEjabberd,
} from "../../bench/targets/ejabberd.js";

const available = ejabberdAvailable();
const TIMEOUT = 60_000;

/** Pids of running processes whose /proc/<pid>/`file` passes `test`. */
function pidsWhere(
  file: "cmdline" | "comm" | "environ",
  test: (text: string) => boolean,
): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (test(readFileSync(`/proc/${entry}/${file}`, "utf8"))) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

/**
 * Running epmd daemons; other software on the machine (RabbitMQ) may run its
 * own. Exited ones waiting to be reaped (zombies, whose state is Z) are left
 * out: they vanish whenever init gets to them.
 */
const epmdPids = () =>
  pidsWhere("comm", (c) => c.trim() === "epmd").filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
    } catch {
      return false;
    }
  });

/** Processes that inherited this target's environment: its node and anything the node started. */
const startedBy = (t: EjabberdTarget) =>
  pidsWhere("environ", (e) =>
    e.split("\0").includes(`EJABBERD_LOG_PATH=${join(t.logDir, "ejabberd.log")}`),
  );

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("ejabberd target and XMPP client", () => {
  // npm test installs ejabberd first (scripts/install-ejabberd.sh): its absence is a failure, not a skip.
  it("finds ejabberd installed", () => {
    expect(available).toEqual({ ok: true });
  });

  const started: EjabberdTarget[] = [];
  afterAll(async () => {
    for (const t of started) await t.stop();
  });

  for (const mode of ["routing", "archive"] as const) {
    it(
      `${mode}: delivers 1:1 and group messages exactly, and stops cleanly`,
      async () => {
        const epmdBefore = epmdPids();
        const target = await startEjabberd({ mode, users: 5 });
        started.push(target);
        expect(startedBy(target)).toContain(target.pid);
        // -start_epmd false: the node registers with no epmd, so it must not have started one.
        const own = new Set(startedBy(target));
        expect(epmdPids().filter((p) => own.has(p))).toEqual([]);
        expect(target.name).toBe(`ejabberd-${mode}`);
        expect(target.version).toMatch(/^\d+\.\d+/);
        expect(await target.rssBytes()).toBeGreaterThan(10_000_000);
        expect(readFileSync(`/proc/${target.pid}/comm`, "utf8").trim()).toBe("beam.smp");

        const chats = new Map<string, string[]>();
        const groups = new Map<string, string[]>();
        const conns: XmppConn[] = [];
        for (let i = 0; i < 3; i++) {
          const user = `u${i}`;
          chats.set(user, []);
          groups.set(user, []);
          conns.push(
            await connectXmpp({
              host: target.host,
              port: target.port,
              domain: target.domain,
              user,
              password: "bench",
              resource: "bench",
              localAddress: `127.0.0.${2 + i}`,
              onChat: (from, body) => chats.get(user)!.push(`${from.split("/")[0]} ${body}`),
              onGroup: (room, nick, body) => groups.get(user)!.push(`${room} ${nick} ${body}`),
            }),
          );
        }
        const [a, b, c] = conns as [XmppConn, XmppConn, XmppConn];
        expect(a.alive).toBe(true);
        expect(a.jid).toBe("u0@bench.local/bench");

        const d = target.domain;
        for (let k = 0; k < 3; k++) {
          a.sendChat(`u1@${d}`, `m:${k}:a&b<c>`);
          b.sendChat(`u0@${d}/bench`, `m:${k}:1733100000000.123`);
        }
        await waitFor(() => chats.get("u0")!.length >= 3 && chats.get("u1")!.length >= 3);
        await sleep(200);
        expect(chats.get("u1")).toEqual([0, 1, 2].map((k) => `u0@${d} m:${k}:a&b<c>`));
        expect(chats.get("u0")).toEqual([0, 1, 2].map((k) => `u1@${d} m:${k}:1733100000000.123`));
        expect(chats.get("u2")).toEqual([]);

        const room = `r1@${target.mucDomain}`;
        await a.joinRoom(room, "alice");
        await Promise.all([b.joinRoom(room, "bob"), c.joinRoom(room, "carol")]);
        a.sendGroup(room, "g:1");
        await waitFor(() => groups.get("u1")!.length >= 1 && groups.get("u2")!.length >= 1);
        await sleep(200);
        expect(groups.get("u1")).toEqual([`${room} alice g:1`]);
        expect(groups.get("u2")).toEqual([`${room} alice g:1`]);

        // Every 1:1 message lands in both parties' archives; the room archives once.
        const expected = mode === "archive" ? 6 * 2 + 1 : 0;
        let archived = await target.archivedCount();
        for (let tries = 0; archived < expected && tries < 50; tries++) {
          await sleep(100);
          archived = await target.archivedCount();
        }
        expect(archived).toBe(expected);

        a.heartbeat();
        await a.close();
        expect(a.alive).toBe(false);
        b.drop();
        await c.close();

        const pid = target.pid;
        await target.stop();
        started.splice(started.indexOf(target), 1);
        const name = target.node.split("@")[0]!;
        expect(pidsWhere("cmdline", (c) => c.includes(name))).toEqual([]);
        expect(startedBy(target)).toEqual([]);
        expect(() => process.kill(pid, 0)).toThrow();
        // An epmd that was already running (another Erlang application's) is left alone.
        for (const p of epmdBefore) expect(() => process.kill(p, 0), `epmd ${p}`).not.toThrow();
      },
      TIMEOUT * 2,
    );
  }
});
