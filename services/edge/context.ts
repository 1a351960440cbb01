import type { TokenService } from "../../lib/auth/tokens.js";
import type { SoftState } from "../../lib/backends/soft-state.js";
import type { Config } from "../../lib/config.js";
import type { Logger } from "../../lib/logger.js";
import type { StoreClient } from "../router/store-client.js";
import type { Actions, RouterClient } from "./actions.js";
import type { DeviceCheck } from "./auth.js";
import type { PresenceService } from "./presence.js";
import type { Sessions } from "./sessions.js";

/** Everything the edge's route handlers use; built once by createEdge. */
export interface EdgeContext {
  config: Config;
  router: RouterClient;
  store: StoreClient;
  soft: SoftState;
  tokens: TokenService;
  actions: Actions;
  sessions: Sessions;
  presence: PresenceService;
  devices: DeviceCheck;
  log: Logger;
}
