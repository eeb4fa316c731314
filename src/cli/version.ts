/**
 * `sluice version`: prints `sluice <version> (deno <version>, sqlite <version>)`.
 *
 * @module
 */

import denoJson from "../../deno.json" with { type: "json" };
import { DatabaseSync } from "node:sqlite";
import { parseVersionArgs } from "./args.ts";

/** sluice's version, from deno.json. */
export const VERSION: string = denoJson.version;

/** The SQLite library version built into the runtime. */
export function sqliteVersion(): string {
  const db = new DatabaseSync(":memory:");
  try {
    const row = db.prepare("SELECT sqlite_version() AS version").get() as { version: string };
    return row.version;
  } finally {
    db.close();
  }
}

/**
 * Runs `sluice version`.
 * @throws {import("./args.ts").UsageError} for any argument.
 */
export function run(args: string[]): Promise<number> {
  parseVersionArgs(args);
  console.log(`sluice ${VERSION} (deno ${Deno.version.deno}, sqlite ${sqliteVersion()})`);
  return Promise.resolve(0);
}
