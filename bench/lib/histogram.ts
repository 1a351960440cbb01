import hdr from "hdr-histogram-js";
import type { LatencySummary } from "./results.js";

/** Microsecond latencies up to one minute, three significant digits. */
export type Histogram = hdr.Histogram;

export function newHistogram(): Histogram {
  // The pure-JS backend: WebAssembly would need an async init in every worker.
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 32,
    autoResize: false,
    useWebAssembly: false,
  });
}

/** Records one value, clamped into the trackable range so a stall never throws. */
export function record(h: Histogram, us: number): void {
  h.recordValue(Math.min(60_000_000, Math.max(1, Math.round(us))));
}

/** Compact text form for IPC between load workers and the coordinator. */
export function encode(h: Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

/** Merges encoded histograms from several workers into one. */
export function mergeEncoded(parts: readonly string[]): Histogram {
  const total = newHistogram();
  for (const p of parts) {
    if (p) total.add(hdr.decodeFromCompressedBase64(p, 32, false));
  }
  return total;
}

export function summarize(h: Histogram): LatencySummary {
  const n = h.totalCount;
  return {
    count: n,
    p50: n ? h.getValueAtPercentile(50) : 0,
    p90: n ? h.getValueAtPercentile(90) : 0,
    p99: n ? h.getValueAtPercentile(99) : 0,
    p999: n ? h.getValueAtPercentile(99.9) : 0,
    max: n ? h.maxValue : 0,
    mean: n ? Math.round(h.mean) : 0,
  };
}

/**
 * The latency at `percentile` of `expected` messages of which `h` holds the
 * delivered ones, the rest ranked later than any of them (never delivered is
 * later than every bound): Infinity when too few were delivered to reach it.
 */
export function percentileCountingMissing(
  h: Histogram,
  expected: number,
  percentile: number,
): number {
  const delivered = h.totalCount;
  if (delivered === 0 || expected <= 0) return Number.POSITIVE_INFINITY;
  const within = (percentile * Math.max(expected, delivered)) / delivered;
  return within > 100 ? Number.POSITIVE_INFINITY : h.getValueAtPercentile(within);
}

/** A monotonic clock in microseconds that every process on this machine shares. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}
