import { createHash, timingSafeEqual } from "node:crypto";
import type { PartnerCredential } from "../config.js";

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * Checks `authorization: Basic base64(key:secret)` against the configured
 * partner credentials in constant time. Returns the partner key, or
 * undefined when the header is missing or wrong.
 */
export function createPartnerAuth(partners: PartnerCredential[]) {
  const known = new Map(partners.map((p) => [p.key, digest(p.secret)]));
  return (authorization: string | null): string | undefined => {
    if (!authorization?.startsWith("Basic ")) return undefined;
    const decoded = Buffer.from(authorization.slice(6), "base64").toString("utf8");
    const i = decoded.indexOf(":");
    if (i <= 0) return undefined;
    const key = decoded.slice(0, i);
    const expected = known.get(key);
    const got = digest(decoded.slice(i + 1));
    // Compare even for unknown keys so timing does not reveal which keys exist.
    const ok = timingSafeEqual(expected ?? digest("\u0000unknown"), got);
    return ok && expected ? key : undefined;
  };
}
