import { HistoryDirection } from "../../gen/chat/v1/chat_service_pb.js";
import {
  type BenchContext,
  closeClients,
  cpuDuring,
  openClients,
  rateStep,
  setRoutes,
} from "../lib/context.js";
import { mergeEncoded, summarize } from "../lib/histogram.js";
import type { HistoryResult } from "../lib/results.js";
import type { Route } from "../worker.js";
import { startTarget } from "./targets.js";

const pageSize = 50;

/**
 * History and sync (ours): one long group for GetHistory paging, and
 * `historyGroups` groups whose members resume with cursors
 * `historyRecent` events behind the head, so every resume reads a batch per group.
 */
export async function historySync(ctx: BenchContext): Promise<HistoryResult | undefined> {
  const s = ctx.scale;
  const t = await startTarget(ctx, "ours", s.historyGroupSize, "history");
  const ours = t?.ours;
  if (!t || !ours) return undefined;
  try {
    const members = Array.from({ length: s.historyGroupSize - 1 }, (_, k) => `u${k + 1}`);
    const convs: string[] = [];
    for (let g = 0; g < s.historyGroups; g++) {
      const res = await ours.chat.createGroupConversation(
        { title: `history ${g}`, memberUserIds: members },
        await ours.as(0),
      );
      convs.push(res.conversation!.conversationId);
    }
    // u0 writes the history through its session, as fast as the server acks.
    await openClients(ctx, t.spec, [{ index: 0, user: "u0", token: await ours.token(0) }], () => 0);
    ctx.progress(`history: writing ${s.historyEvents.toLocaleString()} events`);
    const write = async (routes: Route[], count: number, step: number) => {
      await setRoutes(ctx, routes);
      const rate = 2000;
      const saved = ctx.scale;
      ctx.scale = {
        ...saved,
        stepMs: Math.ceil((count / rate) * 1000),
        graceMs: 2 * saved.graceMs,
      };
      try {
        await rateStep(ctx, step, rate * ctx.workers.length, 1, true, Number.POSITIVE_INFINITY);
      } finally {
        ctx.scale = saved;
      }
    };
    await write([{ client: 0, dest: convs[0]! }], s.historyEvents, 1);
    await write(
      convs.map((c) => ({ client: 0, dest: c })),
      s.historyRecent * s.historyGroups,
      2,
    );
    await closeClients(ctx);
    const heads: number[] = [];
    for (const c of convs) {
      const h = await ours.chat.getHistory(
        { conversationId: c, direction: HistoryDirection.BACKWARD, limit: 1 },
        await ours.as(0),
      );
      heads.push(Number(h.headSeq));
    }

    ctx.progress("history: paging");
    const token1 = await ours.token(1);
    const paged = await cpuDuring(ctx, t.pid, () =>
      Promise.all(
        ctx.workers.map((w) =>
          w.rpc<{ pages: number; events: number; latency: string }>("historyPaging", {
            host: t.spec.host,
            port: t.spec.port,
            token: token1,
            conversationId: convs[0],
            headSeq: heads[0],
            pageSize,
            concurrency: 4,
            durationMs: s.historySeconds * 1000,
          }),
        ),
      ),
    );
    const paging = paged.value;
    const pages = paging.reduce((a, p) => a + p.pages, 0);
    const pagedEvents = paging.reduce((a, p) => a + p.events, 0);

    ctx.progress("history: resume with cursors");
    const resumeClients: { index: number; token: string; cursors: Record<string, number> }[] = [];
    for (let i = 1; i < s.historyGroupSize; i++) {
      const cursors: Record<string, number> = {};
      for (const [g, c] of convs.entries()) cursors[c] = Math.max(0, heads[g]! - s.historyRecent);
      resumeClients.push({ index: i, token: await ours.token(i), cursors });
    }
    const resumed = await cpuDuring(ctx, t.pid, () =>
      Promise.all(
        ctx.workers.map((w, k) =>
          w.rpc<{ resumes: number; events: number; latency: string }>("resumeLoop", {
            host: t.spec.host,
            port: t.spec.port,
            clients: resumeClients.filter((_, i) => i % ctx.workers.length === k),
            concurrency: 4,
            durationMs: s.historySeconds * 1000,
          }),
        ),
      ),
    );
    const resume = resumed.value;
    const resumes = resume.reduce((a, r) => a + r.resumes, 0);
    const resumedEvents = resume.reduce((a, r) => a + r.events, 0);
    const result: HistoryResult = {
      target: "ours",
      paging: {
        pageSize,
        pagesPerSec: Math.round(pages / s.historySeconds),
        eventsPerSec: Math.round(pagedEvents / s.historySeconds),
        latency: summarize(mergeEncoded(paging.map((p) => p.latency))),
        targetCpuPct: paged.targetCpuPct,
        loadGenCpuPct: paged.loadGenCpuPct,
      },
      resume: {
        conversationsPerClient: s.historyGroups,
        eventsPerResume: resumes ? Math.round(resumedEvents / resumes) : 0,
        resumesPerSec: Math.round(resumes / s.historySeconds),
        eventsPerSec: Math.round(resumedEvents / s.historySeconds),
        latency: summarize(mergeEncoded(resume.map((r) => r.latency))),
        targetCpuPct: resumed.targetCpuPct,
        loadGenCpuPct: resumed.loadGenCpuPct,
      },
    };
    ctx.log(
      `history: ${result.paging.pagesPerSec} pages/s (${result.paging.eventsPerSec} events/s, cpu target ${paged.targetCpuPct}% loadgen ${paged.loadGenCpuPct}%); ` +
        `resume ${result.resume.resumesPerSec}/s, ${result.resume.eventsPerResume} events each (cpu target ${resumed.targetCpuPct}% loadgen ${resumed.loadGenCpuPct}%)`,
    );
    return result;
  } finally {
    await t.stop();
  }
}
