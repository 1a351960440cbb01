import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts", "test/contract/**/*.test.ts", "test/inmemory/**/*.test.ts"],
          testTimeout: 15_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          // Full servers and real sockets: spread over two workers on a 2-core box.
          maxWorkers: 2,
        },
      },
    ],
  },
});
