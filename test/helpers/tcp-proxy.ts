import { connect, createServer, type Socket } from "node:net";

/** Where the next whole HTTP/2 unit ends in `buf` (the client preface, then frames), or 0. */
function h2UnitEnd(buf: Buffer, prefaceSeen: boolean): number {
  if (!prefaceSeen) return buf.length >= 24 ? 24 : 0;
  if (buf.length < 9) return 0;
  const end = 9 + buf.readUIntBE(0, 3);
  return buf.length >= end ? end : 0;
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target` ("host:port") that plays a
 * bad network or a server that reads late. Each client connection gets its
 * upstream connection at once; what the client writes can be:
 * - cut: after `cutOnNextRequest()`, the next bytes a client writes are
 *   dropped and both sides destroyed (a request sent, never answered);
 * - held: after `hold()`, kept until `release()`, which forwards it at once or,
 *   with `frameGapMs`, one HTTP/2 unit (preface or frame) at a time.
 * A reset from one side is passed on as a reset to the other.
 */
export async function startTcpProxy(target: string) {
  const [host, port] = target.split(":") as [string, string];
  const sockets = new Set<Socket>();
  const releases = new Set<(gapMs: number) => Promise<void>>();
  let cut = false;
  let holding = false;
  let cuts = 0;
  // Half-open both ways: one side's FIN is passed on, and what the other still sends gets through.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ port: Number(port), host, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    const passReset = (from: Socket, to: Socket) =>
      from.on("error", (err: NodeJS.ErrnoException) => {
        if (err.code === "ECONNRESET") to.resetAndDestroy();
        else to.destroy();
      });
    passReset(client, upstream);
    passReset(upstream, client);
    let held = Buffer.alloc(0);
    let prefaceSeen = false;
    let clientEnded = false;
    const release = async (gapMs: number) => {
      releases.delete(release);
      while (held.length > 0 && !upstream.destroyed) {
        const end = gapMs > 0 ? h2UnitEnd(held, prefaceSeen) || held.length : held.length;
        prefaceSeen = true;
        upstream.write(held.subarray(0, end));
        held = held.subarray(end);
        if (held.length > 0) await new Promise((r) => setTimeout(r, gapMs));
      }
      if (clientEnded) upstream.end();
    };
    client.on("data", (chunk: Buffer) => {
      if (cut) {
        cut = false;
        cuts++;
        client.destroy();
        upstream.destroy();
      } else if (holding || held.length > 0) {
        held = Buffer.concat([held, chunk]);
        releases.add(release);
      } else {
        upstream.write(chunk);
      }
    });
    upstream.pipe(client);
    client.on("end", () => {
      clientEnded = true;
      if (held.length === 0) upstream.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("proxy has no port");
  return {
    address: `127.0.0.1:${address.port}`,
    url: `http://127.0.0.1:${address.port}`,
    cutOnNextRequest() {
      cut = true;
    },
    /** How many connections were cut so far. */
    get cuts() {
      return cuts;
    },
    /** Keeps what clients write from now on, until release(). */
    hold() {
      holding = true;
    },
    /** How many connections have bytes held. */
    get holdingConnections() {
      return releases.size;
    },
    /** Forwards what was held (one HTTP/2 unit per `frameGapMs` if given) and stops holding. */
    async release(frameGapMs = 0) {
      holding = false;
      await Promise.all([...releases].map((r) => r(frameGapMs)));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
