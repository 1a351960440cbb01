import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import { direct, login, openSession, readAll, settle } from "../helpers/clients.js";
import { startPrivateCassandra } from "../helpers/dev-env.js";
import { startServer, type TestServer } from "../helpers/server.js";

let node: Awaited<ReturnType<typeof startPrivateCassandra>>;
let server: TestServer;

beforeAll(async () => {
  node = await startPrivateCassandra();
  server = await startServer({
    cassandra: {
      contactPoints: [node.contactPoint],
      localDataCenter: node.localDataCenter,
      keyspace: "outage",
    },
  });
}, 180_000);

afterAll(async () => {
  await server?.destroy();
  await node?.stop();
});

const seqsOf = (events: { seq: bigint }[]) => events.map((e) => Number(e.seq));

describe("the store in Cassandra, while its node goes away and comes back", () => {
  it("answers UNAVAILABLE while the node is down, loses nothing acknowledged, and stores each retried send once", async () => {
    const ann = await login(server, "ann", "ann-phone");
    const ben = await login(server, "ben", "ben-phone");
    const id = await direct(ann, ben);
    const live = openSession(ben.chat);
    await live.frames.synced();
    const send = (key: string) =>
      ann.chat.send({ conversationId: id, clientMsgId: key, content: { text: key } });

    // Four senders keep sends in flight until the node is killed under them.
    const acked = new Map<string, Event>();
    const failed: { key: string; code: Code }[] = [];
    const senders = Array.from({ length: 4 }, async (_, w) => {
      for (let k = 0; ; k++) {
        const key = `w${w}-${k}`;
        try {
          acked.set(key, (await send(key)).event!);
        } catch (err) {
          failed.push({ key, code: ConnectError.from(err).code });
          return;
        }
      }
    });
    await expect.poll(() => acked.size, { timeout: 10_000 }).toBeGreaterThan(40);
    await node.kill();
    await Promise.all(senders);
    expect(failed.map((f) => f.code)).toEqual(failed.map(() => Code.Unavailable));
    // Reads need the node too, and say so rather than hang.
    await expect(ben.chat.getHistory({ conversationId: id })).rejects.toMatchObject({
      code: Code.Unavailable,
    });

    await node.restart();
    // Clients retry what failed, with the same keys: each is stored once, at a new seq or as itself.
    for (const { key } of failed) {
      for (let i = 0; ; i++) {
        try {
          await send(key);
          break;
        } catch (err) {
          if (i >= 100 || ConnectError.from(err).code !== Code.Unavailable) throw err;
          await settle(200);
        }
      }
    }
    // In pages of 20, so that paging over the restart's seqs is read too.
    const history = await readAll(ben, id, 20);
    const head = history.length;
    expect(seqsOf(history)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    const keys = history.slice(1).map((e) => e.clientMsgId);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.sort()).toEqual([...acked.keys(), ...failed.map((f) => f.key)].sort());
    for (const [key, event] of acked) {
      expect(history[Number(event.seq) - 1]?.eventId, key).toBe(event.eventId);
    }
    // Ben's stream, open all along, ends with every event once and in order.
    await live.frames.until((f) => f.events(id).length >= head, 20_000, `${head} events live`);
    await settle(200);
    expect(seqsOf(live.frames.events(id))).toEqual(seqsOf(history));
    live.abort();
  }, 180_000);
});
