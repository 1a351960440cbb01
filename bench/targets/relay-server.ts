/**
 * Child process: the raw relay, this runtime's ceiling on this machine. The
 * same transport as ours (Node http + ws, binary frames, no compression), and
 * nothing else: no auth, no durability, no sequencing, no per-user state.
 *
 * Frames (UTF-8 text in binary WebSocket messages):
 *   client → relay  `u:<user>|<body>` to one user, `g:<group>|<body>` to a group,
 *                   `j:<group>` joins a group, `h` is a heartbeat
 *   relay → client  `m|<body>` a delivery, `a|<body>` the sender's ack
 */
import http from "node:http";
import { type WebSocket, WebSocketServer } from "ws";
import { serveRpc } from "../lib/procs.js";

const users = new Map<string, WebSocket>();
const groups = new Map<string, Set<WebSocket>>();
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 98_304 });
const server = http.createServer((_req, res) => res.writeHead(404).end());

server.on("upgrade", (req, socket, head) => {
  const id = new URL(req.url ?? "/", "http://relay").searchParams.get("id") ?? "";
  wss.handleUpgrade(req, socket, head, (ws) => {
    users.set(id, ws);
    const joined: Set<WebSocket>[] = [];
    ws.on("message", (data: Buffer) => {
      const bar = data.indexOf(0x7c);
      const head = data.toString("latin1", 0, bar < 0 ? data.length : bar);
      if (head === "h") return;
      if (head.startsWith("j:")) {
        const key = head.slice(2);
        const g = groups.get(key) ?? new Set<WebSocket>();
        groups.set(key, g);
        g.add(ws);
        joined.push(g);
        return;
      }
      const body = data.subarray(bar + 1);
      const out = Buffer.concat([Buffer.from("m|"), body]);
      if (head.startsWith("u:")) {
        users.get(head.slice(2))?.send(out);
      } else if (head.startsWith("g:")) {
        for (const peer of groups.get(head.slice(2)) ?? []) if (peer !== ws) peer.send(out);
      }
      ws.send(Buffer.concat([Buffer.from("a|"), body]));
    });
    ws.on("close", () => {
      if (users.get(id) === ws) users.delete(id);
      for (const g of joined) g.delete(ws);
    });
  });
});

serveRpc({
  start() {
    return new Promise((resolve) => {
      server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, () => {
        const addr = server.address();
        resolve({ port: typeof addr === "object" && addr ? addr.port : 0, pid: process.pid });
      });
    });
  },
  gc() {
    globalThis.gc?.();
    return process.memoryUsage().rss;
  },
  stop() {
    for (const ws of wss.clients) ws.terminate();
    server.close();
    setImmediate(() => process.exit(0));
    return true;
  },
});
