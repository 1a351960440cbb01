import { type BenchContext, closeClients, openClients, ramp, setRoutes } from "../lib/context.js";
import type { RampResult, TargetName } from "../lib/results.js";
import type { ClientSpec, OursTransport, Route } from "../worker.js";
import { clientSpec, directDest, type OursLayout, startTarget } from "./targets.js";

/**
 * 1:1 chat: `pairs` conversations, both members online, each sending to the
 * other. Open-loop steps ramp the rate until p99 send→deliver passes 50 ms.
 * Both members of a pair live in one worker. Ours' clients talk WebSocket,
 * the relay's transport, unless `transport` says otherwise: "grpc", a
 * Session stream on an HTTP/2 connection of each client's own, as a native
 * app's; "connect", a web app's Connect client (a Subscribe call, and a unary
 * Send call per message, on an HTTP/2 connection of its own). With
 * `layout.split`, ours runs as a core and that many edges (clients spread
 * over them by index, so the two members of a pair sit on different edges,
 * and every message crosses from one edge through the core to another); with
 * `layout.cassandra`, its store is in Cassandra. Either way its CPU is every
 * process's, Redis' and Cassandra's included.
 */
export async function oneToOne(
  ctx: BenchContext,
  name: TargetName,
  transport: OursTransport = "websocket",
  layout?: OursLayout,
): Promise<RampResult | undefined> {
  const { pairs } = ctx.scale;
  // A split, a Cassandra store or a Pulsar log on this machine's two cores sustains less than the first rate: it starts lower.
  const rates = layout
    ? [...[100, 200, 300, 400].filter((r) => r < ctx.scale.rates[0]!), ...ctx.scale.rates]
    : ctx.scale.rates;
  const users = pairs * 2;
  const t = await startTarget(ctx, name, users, "one-to-one", layout);
  if (!t) return undefined;
  try {
    const clients: ClientSpec[] = [];
    for (let i = 0; i < users; i++) clients.push(await clientSpec(t, i));
    const routes: Route[] = [];
    for (let k = 0; k < pairs; k++) {
      const a = 2 * k;
      const b = a + 1;
      if (t.ours) {
        const res = await t.ours.chat.createDirectConversation(
          { peerUserId: `u${b}` },
          await t.ours.as(a),
        );
        const conv = res.conversation!.conversationId;
        routes.push({ client: a, dest: conv }, { client: b, dest: conv });
      } else {
        routes.push(
          { client: a, dest: directDest(t.spec, b) },
          { client: b, dest: directDest(t.spec, a) },
        );
      }
    }
    const over = { websocket: "", grpc: " (gRPC)", connect: " (Connect)" }[transport];
    ctx.progress(`${name}: opening ${users} sessions${over}`);
    const opened = await openClients(
      ctx,
      t.spec,
      clients,
      (c) => Math.floor(c.index / 2),
      64,
      transport,
    );
    if (opened.failed > 0) throw new Error(`${opened.failed} sessions failed: ${opened.errors[0]}`);
    await setRoutes(ctx, routes);
    const result: RampResult = await ramp(
      ctx,
      name,
      rates,
      1,
      name === "ours" || name === "relay",
      100,
      layout ? t.pids : t.pid,
    );
    await closeClients(ctx);
    return result;
  } finally {
    await t.stop();
  }
}
