import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { direct, login, openSession, settle } from "../helpers/clients.js";
import { sample, scrape } from "../helpers/metrics.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

describe("metrics", () => {
  it("count calls by outcome, commits, fan-out and open sessions", async () => {
    server = await startServer();
    const [a, b] = await Promise.all([login(server, "ann"), login(server, "ben")]);
    const id = await direct(a, b);
    const bob = openSession(b.chat);
    await bob.frames.synced();
    for (let i = 0; i < 4; i++) {
      await a.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: { text: `m${i}` } });
    }
    await expect(
      a.chat.send({ conversationId: id, clientMsgId: "bad", content: { text: "" } }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    await bob.frames.until((f) => f.events(id).length >= 5);

    const text = await scrape(server);
    const send = 'procedure="chat.v1.ChatService/Send"';
    expect(sample(text, `chat_rpc_total{${send},code="ok"}`)).toBe(4);
    expect(sample(text, `chat_rpc_total{${send},code="invalid_argument"}`)).toBe(1);
    expect(sample(text, `chat_rpc_duration_seconds_count{${send}}`)).toBe(5);
    // The internal send path is measured too.
    expect(
      sample(text, 'chat_rpc_total{procedure="chat.internal.v1.RouterService/Apply",code="ok"}'),
    ).toBe(4);
    expect(sample(text, 'chat_events_committed_total{kind="messagePosted"}')).toBe(4);
    expect(sample(text, 'chat_events_committed_total{kind="conversationCreated"}')).toBe(1);
    // Bob's stream got the 4 messages by fan-out (the creation came by sync);
    // Ann has no open stream.
    expect(sample(text, 'chat_fanout_deliveries_total{frame="event"}')).toBe(4);
    expect(sample(text, "chat_sessions")).toBe(1);
    expect(sample(text, 'chat_rpc_streams_open{procedure="chat.v1.ChatService/Session"}')).toBe(1);
    expect(text).toContain("chat_process_cpu_user_seconds_total");
    expect(text).toContain("chat_nodejs_eventloop_lag_p99_seconds");
    expect(text).toContain("chat_commit_batch_events_bucket");

    bob.abort();
    await bob.frames.untilEnded();
    await settle();
    const after = await scrape(server);
    expect(sample(after, "chat_sessions")).toBe(0);
    expect(sample(after, 'chat_rpc_streams_open{procedure="chat.v1.ChatService/Session"}')).toBe(0);
  });

  it("are served apart from the public port, and can be turned off", async () => {
    server = await startServer();
    const publicRes = await fetch(`${server.url}/metrics`);
    expect(publicRes.status).toBe(404);
    await server.destroy();
    server = await startServer({ metrics: { enabled: false } });
    expect(server.app.metricsAddress).toBeUndefined();
  });
});
