import { timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

const header = "authorization";

/**
 * Calls between a deployment's own processes (edges to the core) carry the
 * shared internal secret as a bearer token; the core refuses any other call
 * with UNAUTHENTICATED. Internal services are never for clients.
 */
export function internalAuth(secret: string): { server: Interceptor; client: Interceptor } {
  const expected = Buffer.from(`Bearer ${secret}`);
  return {
    server: (next) => async (req) => {
      const given = Buffer.from(req.header.get(header) ?? "");
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new ConnectError("internal calls need the internal secret", Code.Unauthenticated);
      }
      return next(req);
    },
    client: (next) => async (req) => {
      req.header.set(header, `Bearer ${secret}`);
      return next(req);
    },
  };
}
