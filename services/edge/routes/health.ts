import { ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../../gen/grpc/health/v1/health_pb.js";
import { fail } from "../../../lib/errors.js";

/**
 * The standard gRPC health service. "" is the whole server; each served
 * service also has its own entry. All turn NOT_SERVING when shutdown begins.
 */
export function createHealth(serviceNames: string[]) {
  let status = Status.SERVING;
  const watchers = new Set<() => void>();
  const known = new Set(["", ...serviceNames]);
  const routes: ServiceImpl<typeof Health> = {
    async check(req) {
      if (!known.has(req.service)) throw fail.notFound(`unknown service ${req.service}`);
      return { status };
    },
    async list() {
      return { statuses: Object.fromEntries([...known].map((s) => [s, { status }])) };
    },
    async *watch(req, hctx) {
      if (!known.has(req.service)) {
        yield { status: Status.SERVICE_UNKNOWN };
        return;
      }
      let last: Status | undefined;
      while (!hctx.signal.aborted) {
        if (status !== last) {
          last = status;
          yield { status };
        }
        // The call may have been aborted while suspended at the yield; an abort
        // listener added now would never fire.
        if (hctx.signal.aborted) break;
        await new Promise<void>((resolve) => {
          const done = () => {
            watchers.delete(done);
            hctx.signal.removeEventListener("abort", done);
            resolve();
          };
          watchers.add(done);
          hctx.signal.addEventListener("abort", done);
        });
      }
      // Shutdown ends watchers with its UNAVAILABLE, so they reconnect elsewhere.
      if (hctx.signal.reason instanceof ConnectError) throw hctx.signal.reason;
    },
  };
  return {
    routes,
    get serving() {
      return status === Status.SERVING;
    },
    setServing(serving: boolean) {
      status = serving ? Status.SERVING : Status.NOT_SERVING;
      for (const w of [...watchers]) w();
    },
  };
}
