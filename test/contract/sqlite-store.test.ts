import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore, type SqliteStore } from "../../lib/backends/sqlite/sqlite-store.js";
import { eventStoreContract } from "./event-store.contract.js";
import type { StoreFactory } from "./fixtures.js";
import { metadataStoreContract } from "./metadata-store.contract.js";

/** A fresh database file per test; reopen closes it and opens the same file again. */
const sqliteFactory: StoreFactory = async () => {
  const dir = mkdtempSync(join(tmpdir(), "chat-contract-"));
  const path = join(dir, "chat.db");
  let store: SqliteStore = openSqliteStore({ path, synchronous: "NORMAL" });
  return {
    get events() {
      return store;
    },
    get metadata() {
      return store;
    },
    async reopen() {
      await store.close();
      store = openSqliteStore({ path, synchronous: "NORMAL" });
      return { events: store, metadata: store };
    },
    async cleanup() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
};

eventStoreContract("sqlite", sqliteFactory);
metadataStoreContract("sqlite", sqliteFactory);
