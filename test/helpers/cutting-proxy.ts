import { connect, createServer, type Socket } from "node:net";

/**
 * A TCP proxy on 127.0.0.1 in front of `target` ("host:port") that can cut
 * connections the way a node that dies does: after `cutOnNextRequest()`, the
 * next bytes a client writes are dropped and both sides of that connection
 * are destroyed, so the request was sent and never answered.
 */
export async function startCuttingProxy(target: string) {
  const [host, port] = target.split(":") as [string, string];
  const sockets = new Set<Socket>();
  let cut = false;
  let cuts = 0;
  const server = createServer((client) => {
    const upstream = connect(Number(port), host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => undefined);
    }
    client.on("data", (chunk) => {
      if (!cut) {
        upstream.write(chunk);
        return;
      }
      cut = false;
      cuts++;
      client.destroy();
      upstream.destroy();
    });
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("proxy has no port");
  return {
    address: `127.0.0.1:${address.port}`,
    cutOnNextRequest() {
      cut = true;
    },
    /** How many connections were cut so far. */
    get cuts() {
      return cuts;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
