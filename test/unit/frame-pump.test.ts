import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { describe, expect, it, vi } from "vitest";
import {
  type ServerFrame,
  SessionRequestSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { type ConfigInput, toConfig } from "../../lib/config.js";
import { createRootLogger } from "../../lib/logger.js";
import type { EdgeContext } from "../../services/edge/context.js";
import { FramePump, type FrameWire } from "../../services/edge/frame-pump.js";
import { frame, revokedError, Session } from "../../services/edge/session.js";
import type { StoreClient } from "../../services/router/store-client.js";

const caller = { userId: "ann", deviceId: "ann-phone", tokenExpiresAtMs: Date.now() + 60_000 };

/** A transport that records what the pump does; `stalled`, it never drains. */
class TestWire implements FrameWire {
  writable = true;
  buffered = 0;
  readonly written: ServerFrame[] = [];
  ended: { err: ConnectError | undefined } | undefined;
  reading = true;

  constructor(private readonly stalled = false) {
    if (stalled) this.buffered = 1 << 20;
  }

  write(bytes: Uint8Array, flushed?: (err?: Error | null) => void) {
    const f = fromBinary(SessionResponseSchema, bytes).frame;
    if (f) this.written.push(f);
    if (flushed && !this.stalled) queueMicrotask(() => flushed());
  }
  cork() {}
  uncork() {}
  pause() {
    this.reading = false;
  }
  resume() {
    this.reading = true;
  }
  finish(err: ConnectError | undefined) {
    this.ended = { err };
    this.writable = false;
  }
}

/**
 * A pump over a TestWire whose session opens when the test says so. Frames
 * it runs spend a budget that never runs out and heartbeat into nothing.
 */
function pump(opts: { limits?: ConfigInput["limits"]; stalled?: boolean } = {}) {
  const config = toConfig({ devMode: true, ...(opts.limits ? { limits: opts.limits } : {}) });
  let open!: (s: Session) => void;
  const opening = new Promise<Session>((resolve) => {
    open = resolve;
  });
  const released: Session[] = [];
  const ctx = {
    config,
    sessions: {
      open: () => opening,
      release: async (s: Session) => {
        released.push(s);
      },
    },
    soft: { limiter: { take: async () => true } },
    actions: { heartbeat: async () => undefined },
    log: createRootLogger("silent"),
  } as unknown as EdgeContext;
  const wire = new TestWire(opts.stalled);
  const session = new Session(
    caller,
    "session",
    {
      store: {} as StoreClient,
      outboxMaxFrames: 64,
      gapWaitMs: 50,
      syncLimit: 100,
      baselineWindowMs: 0,
      log: createRootLogger("silent"),
    },
    true,
  );
  return { pump: new FramePump(ctx, wire, caller), wire, session, open, released };
}

const heartbeat = (frameId: string) =>
  toBinary(
    SessionRequestSchema,
    create(SessionRequestSchema, { frameId, action: { case: "heartbeat", value: {} } }),
  );

const answered = (wire: TestWire) =>
  new Set(wire.written.map((f) => f.replyToFrameId).filter(Boolean)).size;

describe("frames that arrive while a session opens", () => {
  it("holds up to 64 and answers each once the session has opened", async () => {
    const { pump: p, wire, session, open } = pump();
    for (let i = 0; i < 64; i++) p.receive(heartbeat(`h${i}`));
    expect(wire.ended).toBeUndefined();
    open(session);
    await vi.waitFor(() => expect(answered(wire)).toBe(64));
    expect(wire.ended).toBeUndefined();
  });

  it("stops reading at 64, keeps what was read past it, and reads on once the session has opened", async () => {
    const { pump: p, wire, session, open } = pump();
    for (let i = 0; i < 63; i++) p.receive(heartbeat(`h${i}`));
    expect(wire.reading).toBe(true);
    p.receive(heartbeat("h63"));
    expect(wire.reading).toBe(false);
    // A transport delivers what it had already read in the same chunk.
    for (let i = 64; i < 100; i++) p.receive(heartbeat(`h${i}`));
    expect(wire.ended).toBeUndefined();
    open(session);
    await vi.waitFor(() => expect(answered(wire)).toBe(100));
    expect(wire.reading).toBe(true);
    expect(wire.ended).toBeUndefined();
  });

  it("ends the stream with RESOURCE_EXHAUSTED past four frames of frameMaxBytes, and lets go of the session once it opens", async () => {
    const {
      pump: p,
      wire,
      session,
      open,
      released,
    } = pump({
      limits: { messageMaxBytes: 1024, frameMaxBytes: 2048 },
    });
    // Each a little under 2 KiB with its bookkeeping: four fit in 8 KiB, a fifth does not.
    for (let i = 0; i < 4; i++) p.receive(heartbeat(`${i}`.padEnd(1900, "x")));
    expect(wire.ended).toBeUndefined();
    expect(wire.reading).toBe(false);
    p.receive(heartbeat("4".padEnd(1900, "x")));
    expect(wire.ended?.err?.code).toBe(Code.ResourceExhausted);
    open(session);
    await vi.waitFor(() => expect(released).toEqual([session]));
    expect(wire.written).toEqual([]);
  });
});

describe("a frame that cannot be written", () => {
  it("ends only its stream with INTERNAL and releases the session", async () => {
    const { wire, session, open, released } = pump();
    // No uint32 holds this: encoding the frame throws.
    session.push(frame({ case: "ready", value: { heartbeatIntervalMs: 0.5 } }));
    open(session);
    await vi.waitFor(() => expect(wire.ended).toBeDefined());
    expect(wire.ended?.err?.code).toBe(Code.Internal);
    expect(wire.written).toEqual([]);
    expect(session.isClosed).toBe(true);
    expect(released).toEqual([session]);
  });
});

describe("a transport that stopped draining", () => {
  it("ends as soon as its session is ended with an error, without waiting for the drain", async () => {
    const { wire, session, open, released } = pump({ stalled: true });
    session.push(frame({ case: "heartbeat", value: {} }));
    open(session);
    await vi.waitFor(() => expect(wire.written).toHaveLength(1));
    session.push(frame({ case: "heartbeat", value: {} }));
    session.close(revokedError());
    await vi.waitFor(() => expect(wire.ended).toBeDefined(), { timeout: 1000 });
    expect(wire.ended?.err?.code).toBe(Code.Unauthenticated);
    expect(released).toEqual([session]);
    expect(wire.written).toHaveLength(1);
  });

  it("gives a session that ended cleanly the lag timeout to be read, then ends it with RESOURCE_EXHAUSTED", async () => {
    const { wire, session, open, released } = pump({
      stalled: true,
      limits: { lagTimeoutMs: 300 },
    });
    session.push(frame({ case: "heartbeat", value: {} }));
    session.push(frame({ case: "heartbeat", value: {} }));
    open(session);
    await vi.waitFor(() => expect(wire.written).toHaveLength(1));
    session.close();
    await new Promise((r) => setTimeout(r, 150));
    expect(wire.ended).toBeUndefined();
    await vi.waitFor(() => expect(wire.ended).toBeDefined(), { timeout: 1000 });
    expect(wire.ended?.err?.code).toBe(Code.ResourceExhausted);
    expect(released).toEqual([session]);
  });
});
