import type { BenchContext } from "../lib/context.js";
import { mergeEncoded, summarize } from "../lib/histogram.js";
import type { ReconnectResult } from "../lib/results.js";
import type { ClientSpec } from "../worker.js";
import { clientSpec, startTarget } from "./targets.js";

/**
 * Reconnect storm (ours): every client is online in a group, then all drop at
 * once; each group gets `stormMissed` new messages while they are away; then
 * all reconnect at once with their cursors. Counts time until every client
 * holds every event, and events lost (never received) or received twice.
 */
export async function reconnectStorm(ctx: BenchContext): Promise<ReconnectResult | undefined> {
  const { stormClients, stormGroupSize, stormMissed } = ctx.scale;
  const groups = Math.ceil(stormClients / stormGroupSize);
  const t = await startTarget(ctx, "ours", stormClients + groups, "reconnect");
  const ours = t?.ours;
  if (!t || !ours) return undefined;
  try {
    const convs: string[] = [];
    for (let g = 0; g < groups; g++) {
      const sender = stormClients + g;
      const members: string[] = [];
      for (let i = g * stormGroupSize; i < Math.min(stormClients, (g + 1) * stormGroupSize); i++) {
        members.push(`u${i}`);
      }
      const res = await ours.chat.createGroupConversation(
        { title: `storm ${g}`, memberUserIds: members },
        await ours.as(sender),
      );
      convs.push(res.conversation!.conversationId);
    }
    const per = ctx.workers.map(() => [] as ClientSpec[]);
    for (let i = 0; i < stormClients; i++) {
      per[i % ctx.workers.length]!.push(await clientSpec(t, i));
    }
    ctx.progress(`storm: connecting ${stormClients.toLocaleString()} clients`);
    const opened = await Promise.all(
      ctx.workers.map((w, i) =>
        w.rpc<{ opened: number; failed: number }>("stormOpen", {
          target: t.spec,
          clients: per[i],
          concurrency: 64,
        }),
      ),
    );
    const failed = opened.reduce((a, o) => a + o.failed, 0);
    if (failed) throw new Error(`${failed} storm clients failed to connect`);

    ctx.progress("storm: dropping every client");
    await Promise.all(ctx.workers.map((w) => w.rpc("stormDrop")));
    await new Promise((r) => setTimeout(r, 500));
    const expected: Record<string, number> = {};
    for (const [g, conv] of convs.entries()) {
      for (let m = 0; m < stormMissed; m++) {
        const res = await ours.chat.send(
          {
            conversationId: conv,
            clientMsgId: `missed-${g}-${m}`,
            content: { text: `missed ${m}` },
          },
          await ours.as(stormClients + g),
        );
        expected[conv] = Number(res.event!.seq);
      }
    }

    ctx.progress(`storm: ${stormClients.toLocaleString()} clients reconnecting at once`);
    const deadlineMs = ctx.quick ? 20_000 : 60_000;
    const res = await Promise.all(
      ctx.workers.map((w) =>
        w.rpc<{
          clients: number;
          caughtUp: number;
          lost: number;
          duplicated: number;
          lastCaughtUpUs: number;
          startUs: number;
          connectFailures: number;
          perClient: string;
        }>("stormReconnect", { expected, deadlineMs }),
      ),
    );
    const startUs = Math.min(...res.map((r) => r.startUs));
    const lastUs = Math.max(...res.map((r) => r.lastCaughtUpUs));
    const result: ReconnectResult = {
      target: "ours",
      clients: res.reduce((a, r) => a + r.clients, 0),
      missedPerClient: stormMissed,
      catchUpMs: Math.round((lastUs - startUs) / 1000),
      caughtUp: res.reduce((a, r) => a + r.caughtUp, 0),
      lost: res.reduce((a, r) => a + r.lost, 0),
      duplicated: res.reduce((a, r) => a + r.duplicated, 0),
      perClient: summarize(mergeEncoded(res.map((r) => r.perClient))),
    };
    const retries = res.reduce((a, r) => a + r.connectFailures, 0);
    ctx.log(
      `storm: ${result.caughtUp}/${result.clients} caught up in ${result.catchUpMs} ms, lost ${result.lost}, duplicated ${result.duplicated}, connect retries ${retries}`,
    );
    await Promise.all(ctx.workers.map((w) => w.rpc("stormClose")));
    return result;
  } finally {
    await t.stop();
  }
}
