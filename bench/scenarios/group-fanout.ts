import {
  type BenchContext,
  closeClients,
  groupSloUs,
  openClients,
  ramp,
  setRoutes,
} from "../lib/context.js";
import { cpuUsOf } from "../lib/procs.js";
import type { RampResult, TargetName } from "../lib/results.js";
import type { ClientSpec, Route } from "../worker.js";
import { clientSpec, startTarget } from "./targets.js";

/** Waits until the process uses under 10% of a core for `windowMs`; returns how long it took. */
async function quiesce(pid: number, maxMs: number, windowMs: number): Promise<number> {
  const start = Date.now();
  let last = cpuUsOf(pid);
  while (Date.now() - start < maxMs) {
    await new Promise((r) => setTimeout(r, windowMs));
    const now = cpuUsOf(pid);
    if (now - last < windowMs * 100) break;
    last = now;
  }
  return Date.now() - start;
}

/**
 * Group fan-out: `groups` groups of `groupSize` members, all online; a few
 * members of each group post at a ramped open-loop rate. Every message is one
 * delivery per other member (XMPP MUC: its echo to the sender is the ack).
 */
export async function groupFanout(
  ctx: BenchContext,
  name: TargetName,
): Promise<RampResult | undefined> {
  const { groupSize, groups, groupSendersPerGroup, groupRates } = ctx.scale;
  const users = groupSize * groups;
  const t = await startTarget(ctx, name, users, "group-fanout");
  if (!t) return undefined;
  try {
    const clients: ClientSpec[] = [];
    const routes: Route[] = [];
    for (let g = 0; g < groups; g++) {
      const first = g * groupSize;
      let dest = t.spec.kind === "relay" ? `g:g${g}` : `g${g}`;
      if (t.ours) {
        const members = Array.from({ length: groupSize - 1 }, (_, k) => `u${first + 1 + k}`);
        const res = await t.ours.chat.createGroupConversation(
          { title: `bench ${g}`, memberUserIds: members },
          await t.ours.as(first),
        );
        dest = res.conversation!.conversationId;
      }
      for (let k = 0; k < groupSize; k++) {
        const i = first + k;
        clients.push(await clientSpec(t, i, [`g${g}`]));
        if (k < groupSendersPerGroup) routes.push({ client: i, dest, group: true });
      }
    }
    ctx.progress(`${name}: opening ${users} group members`);
    // MUC joins broadcast presence to every occupant: keep them gentle.
    const opened = await openClients(
      ctx,
      t.spec,
      clients,
      undefined,
      t.spec.kind === "xmpp" ? 16 : 64,
    );
    if (opened.failed > 0) throw new Error(`${opened.failed} sessions failed: ${opened.errors[0]}`);
    await setRoutes(ctx, routes);
    // Let join and membership traffic settle before measuring: a MUC join
    // broadcasts presence to every occupant, O(n²) stanzas for the room.
    ctx.progress(`${name}: waiting for join traffic to settle`);
    const busyMs = await quiesce(t.pid, ctx.quick ? 5000 : 60_000, ctx.quick ? 500 : 1000);
    ctx.log(`${name}: joins settled after ${busyMs} ms`);
    const result: RampResult = await ramp(
      ctx,
      name,
      groupRates,
      groupSize - 1,
      true,
      200,
      t.pid,
      groupSloUs,
    );
    await closeClients(ctx);
    return result;
  } finally {
    await t.stop();
  }
}
