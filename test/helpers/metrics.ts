import type { TestServer } from "./server.js";

/** The server's Prometheus text, from its metrics listener. */
export async function scrape(s: TestServer): Promise<string> {
  const address = s.app.metricsAddress;
  if (!address) throw new Error("metrics are not served");
  const res = await fetch(`http://127.0.0.1:${address.port}/metrics`);
  if (res.status !== 200) throw new Error(`metrics answered ${res.status}`);
  return res.text();
}

/** The value of one sample, e.g. sample(text, 'chat_rpc_total{procedure="x",code="ok"}'); 0 if absent. */
export function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
