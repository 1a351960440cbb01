import type { Client } from "@connectrpc/connect";
import type { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";

/** The router and the edge reach the store only through its Connect service. */
export type StoreClient = Client<typeof StoreService>;
