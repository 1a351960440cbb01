import { it } from "vitest";
import { direct, login, openSession } from "../helpers/clients.js";
import type { TestServer } from "../helpers/server.js";

it("load", async () => {
  const A = { url: "http://127.0.0.1:18095" } as TestServer,
    B = A;
  const ann = await login(A, "ann", "a1");
  const ben = await login(B, "ben", "b1");
  const id = await direct(ann, ben);
  const la = openSession(ann.chat);
  const lb = openSession(ben.chat);
  await la.frames.synced();
  await lb.frames.synced();
  const t0 = Date.now();
  for (let i = 0; i < 200; i++)
    await ann.chat.send({ conversationId: id, clientMsgId: `m${i}`, content: { text: "x" } });
  await lb.frames.until((f) => f.events(id).length >= 201, 20000);
  console.log("MS", Date.now() - t0);
  la.abort();
  lb.abort();
}, 60000);
