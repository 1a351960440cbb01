import { type Logger, pino } from "pino";

export type { Logger };

/**
 * The process's root logger. Services derive named children from it
 * (see each service's logger.ts) so every line says where it came from.
 */
export function createRootLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { pid: process.pid } }, destination);
}
