import { create } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createContextKey,
  type Interceptor,
} from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  Health,
  type HealthCheckRequest,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../gen/grpc/health/v1/health_pb.js";
import { createInProcessTransport } from "../../lib/in-process-transport.js";

const tenant = createContextKey("", { description: "set by the test interceptor" });

function setup(opts: { interceptors?: Interceptor[] } = {}) {
  const seen: { req?: HealthCheckRequest; tenant?: string; header?: string | null } = {};
  const reply = create(HealthCheckResponseSchema, {
    status: HealthCheckResponse_ServingStatus.SERVING,
  });
  const routes = (router: ConnectRouter) =>
    router.service(Health, {
      check(req, ctx) {
        seen.req = req;
        seen.tenant = ctx.values.get(tenant);
        seen.header = ctx.requestHeader.get("x-caller");
        if (req.service === "missing") throw new ConnectError("no such service", Code.NotFound);
        if (req.service === "broken") throw new Error("disk on fire");
        return reply;
      },
      list() {
        return {};
      },
      async *watch() {
        yield reply;
      },
    });
  const client = createClient(Health, createInProcessTransport(routes, opts));
  return { client, seen, reply };
}

describe("in-process transport", () => {
  it("hands request and response over by reference, with headers", async () => {
    const { client, seen, reply } = setup();
    const req = create(HealthCheckRequestSchema, { service: "chat" });
    const res = await client.check(req, { headers: { "x-caller": "edge" } });
    expect(seen.req).toBe(req);
    expect(res).toBe(reply);
    expect(seen.header).toBe("edge");
  });

  it("runs the serving side's interceptors, which can set context values", async () => {
    const calls: string[] = [];
    const { client, seen } = setup({
      interceptors: [
        (next) => async (req) => {
          calls.push(`${req.service.typeName}/${req.method.name}`);
          req.contextValues.set(tenant, "t1");
          return next(req);
        },
      ],
    });
    await client.check({ service: "chat" });
    expect(calls).toEqual(["grpc.health.v1.Health/Check"]);
    expect(seen.tenant).toBe("t1");
  });

  it("returns handler errors as ConnectErrors with their code, others as INTERNAL", async () => {
    const { client } = setup();
    await expect(client.check({ service: "missing" })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    const err = await client.check({ service: "broken" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Internal);
  });

  it("refuses an aborted call and streaming methods", async () => {
    const { client, seen } = setup();
    const abort = new AbortController();
    abort.abort();
    await expect(client.check({ service: "chat" }, { signal: abort.signal })).rejects.toMatchObject(
      { code: Code.Canceled },
    );
    expect(seen.req).toBeUndefined();
    const stream = client.watch({ service: "chat" });
    await expect(stream[Symbol.asyncIterator]().next()).rejects.toMatchObject({
      code: Code.Unimplemented,
    });
  });

  it("answers UNIMPLEMENTED for a method no route registered", async () => {
    const transport = createInProcessTransport((router) =>
      router.rpc(Health.method.list, async () => ({})),
    );
    const client = createClient(Health, transport);
    await expect(client.list({})).resolves.toBeDefined();
    await expect(client.check({ service: "chat" })).rejects.toMatchObject({
      code: Code.Unimplemented,
    });
  });
});

describe("in-process transport: headers", () => {
  it("gives calls without headers shared read-only ones, and response headers on demand", async () => {
    const seen: { header?: Headers; same?: boolean } = {};
    let first: Headers | undefined;
    const routes = (router: ConnectRouter) =>
      router.service(Health, {
        check(req, ctx) {
          first ??= ctx.requestHeader;
          seen.same = first === ctx.requestHeader;
          if (req.service === "write") ctx.requestHeader.set("x-a", "1");
          if (req.service === "reply") ctx.responseHeader.set("x-served-by", "store");
          return { status: HealthCheckResponse_ServingStatus.SERVING };
        },
        list: () => ({}),
        async *watch() {},
      });
    const client = createClient(Health, createInProcessTransport(routes));
    await client.check({ service: "a" });
    await client.check({ service: "b" });
    expect(seen.same).toBe(true);
    await expect(client.check({ service: "write" })).rejects.toThrow(/read-only/);
    let replied: string | null = null;
    await client.check({ service: "reply" }, { onHeader: (h) => (replied = h.get("x-served-by")) });
    expect(replied).toBe("store");
  });
});
