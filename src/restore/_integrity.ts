/**
 * The optional post-restore integrity check: SQLite itself reads the restored file. It runs
 * on a read-only connection and removes the `-wal`/`-shm` files that opening a WAL-mode
 * database creates, so the restored database is left exactly as written.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { pathExists, removeIfExists } from "./_fs.ts";

/** Which SQLite check to run: `quick_check` or the slower full `integrity_check`. */
export type IntegrityCheckMode = "quick" | "full";

/**
 * Runs the check and returns SQLite's complaints (empty when the database is sound).
 * Synchronous inside: `node:sqlite` blocks while SQLite reads the whole file, which is
 * acceptable for a one-shot restore but not for code sharing the event loop with replication.
 */
export async function checkIntegrity(path: string, mode: IntegrityCheckMode): Promise<string[]> {
  const sidecars = [`${path}-wal`, `${path}-shm`];
  const preexisting = await Promise.all(sidecars.map(pathExists));
  const problems: string[] = [];
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const pragma = mode === "full" ? "integrity_check" : "quick_check";
    for (const row of db.prepare(`PRAGMA ${pragma}`).all()) {
      const message = String(Object.values(row)[0]);
      if (message !== "ok") problems.push(message);
    }
  } catch (err) {
    problems.push(err instanceof Error ? err.message : String(err));
  } finally {
    db?.close();
    await Promise.all(
      sidecars.map((sidecar, i) => preexisting[i] ? undefined : removeIfExists(sidecar)),
    );
  }
  return problems;
}
