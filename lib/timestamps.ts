import type { Timestamp } from "@bufbuild/protobuf/wkt";

/**
 * timestampFromMs without create(), for the send path, which stamps every
 * event: the same Timestamp for any millisecond count, the epoch and before
 * included (nanos stay in [0, 1e9)).
 */
export function timestampAt(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return {
    $typeName: "google.protobuf.Timestamp",
    seconds: BigInt(seconds),
    nanos: (ms - seconds * 1000) * 1_000_000,
  };
}
