import WebSocket from "ws";

/** A bench client on the raw relay (see bench/targets/relay-server.ts). */
export interface RelayConn {
  /** `to` is `u:<user>` or `g:<group>`. */
  send(to: string, body: string): void;
  join(group: string): void;
  heartbeat(): void;
  drop(): void;
  close(): void;
  readonly alive: boolean;
}

export function connectRelay(opts: {
  host: string;
  port: number;
  user: string;
  localAddress?: string;
  onDeliver?: (body: string) => void;
  onAck?: (body: string) => void;
  onClose?: () => void;
}): Promise<RelayConn> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${opts.host}:${opts.port}/?id=${opts.user}`, {
      perMessageDeflate: false,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    });
    const conn: RelayConn = {
      send(to, body) {
        if (ws.readyState === WebSocket.OPEN) ws.send(Buffer.from(`${to}|${body}`));
      },
      join(group) {
        if (ws.readyState === WebSocket.OPEN) ws.send(Buffer.from(`j:${group}`));
      },
      heartbeat() {
        if (ws.readyState === WebSocket.OPEN) ws.send(Buffer.from("h"));
      },
      drop() {
        ws.terminate();
      },
      close() {
        ws.close(1000);
      },
      get alive() {
        return ws.readyState === WebSocket.OPEN;
      },
    };
    ws.on("open", () => resolve(conn));
    ws.on("message", (data: Buffer) => {
      const body = data.toString("latin1", 2);
      if (data[0] === 0x6d) opts.onDeliver?.(body);
      else opts.onAck?.(body);
    });
    ws.on("error", reject);
    ws.on("close", () => opts.onClose?.());
  });
}
