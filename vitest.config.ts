import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    globalSetup: ["test/global-setup.ts"],
    projects: [
      {
        test: {
          name: "unit",
          sequence: { groupOrder: 0 },
          include: [
            "test/unit/**/*.test.ts",
            "test/contract/**/*.test.ts",
            "test/inmemory/**/*.test.ts",
          ],
          testTimeout: 15_000,
        },
      },
      {
        test: {
          name: "e2e",
          // Unit tests first; then full servers, two workers on a 2-core box.
          sequence: { groupOrder: 1 },
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          maxWorkers: 2,
        },
      },
      {
        test: {
          name: "bench",
          // Last and alone: the bench smoke run uses both cores and real ejabberd/PostgreSQL.
          sequence: { groupOrder: 2 },
          include: ["test/bench/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          maxWorkers: 1,
          fileParallelism: false,
        },
      },
    ],
  },
});
