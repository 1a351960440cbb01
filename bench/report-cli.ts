/**
 * Regenerates docs/BENCHMARKS.md and docs/bench/*.svg from a saved run:
 *   npm run bench:report -- docs/bench/results-full.json [--docs docs] [--profile file]
 * Profile fixes come from bench/profile-fixes.json when that file exists.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type BenchRun, type ProfileFix, readRunDigests } from "./lib/results.js";
import { writeReport } from "./report.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Shallow shape check: enough to fail with a clear message on the wrong file. */
function assertBenchRun(v: unknown, source: string): asserts v is BenchRun {
  const problems: string[] = [];
  if (!isRecord(v)) throw new Error(`${source}: not a JSON object`);
  for (const key of ["startedAt", "gitCommit", "mode"]) {
    if (typeof v[key] !== "string") problems.push(`${key} must be a string`);
  }
  if (typeof v.durationMs !== "number") problems.push("durationMs must be a number");
  for (const key of ["oneToOne", "idle", "reconnect", "history", "skipped"]) {
    if (!Array.isArray(v[key])) problems.push(`${key} must be an array`);
  }
  if (!isRecord(v.machine)) problems.push("machine must be an object");
  if (!isRecord(v.settings)) problems.push("settings must be an object");
  if (!isRecord(v.groupFanout) || !Array.isArray(v.groupFanout.results)) {
    problems.push("groupFanout.results must be an array");
  }
  if (problems.length > 0) throw new Error(`${source}: not a BenchRun (${problems.join("; ")})`);
}

function assertProfileFixes(v: unknown, source: string): asserts v is ProfileFix[] {
  const ok =
    Array.isArray(v) &&
    v.every(
      (f) =>
        isRecord(f) &&
        typeof f.title === "string" &&
        typeof f.detail === "string" &&
        typeof f.method === "string" &&
        Array.isArray(f.measures),
    );
  if (!ok) throw new Error(`${source}: expected an array of {title, detail, method, measures}`);
}

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await readFile(file, "utf8")) as unknown;
}

/** Reads the profile fixes file; a missing file means none were recorded. */
async function readProfile(file: string): Promise<ProfileFix[]> {
  let raw: unknown;
  try {
    raw = await readJson(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  assertProfileFixes(raw, file);
  return raw;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      docs: { type: "string", default: path.join(repoRoot, "docs") },
      profile: { type: "string", default: path.join(repoRoot, "bench", "profile-fixes.json") },
    },
  });
  const resultsFile = path.resolve(positionals[0] ?? "docs/bench/results-full.json");
  const run = await readJson(resultsFile);
  assertBenchRun(run, resultsFile);
  const profile = await readProfile(path.resolve(values.profile));
  // A full run's record of earlier runs sits next to its results.
  const runs =
    run.mode === "full"
      ? readRunDigests(path.join(path.dirname(resultsFile), "runs-full.json"))
      : [];
  const { markdownPath, charts } = await writeReport(run, {
    docsDir: path.resolve(values.docs),
    profile,
    resultsFile,
    runs,
  });
  process.stdout.write(`wrote ${markdownPath}\n${charts.map((c) => `wrote ${c}\n`).join("")}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`report-cli: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
