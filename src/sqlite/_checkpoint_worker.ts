/**
 * Worker side of {@linkcode checkpoint}: runs `PRAGMA wal_checkpoint(MODE)` on its own short-lived
 * connection, so that copying thousands of WAL frames into the database file and fsyncing it
 * never holds up the main thread's event loop.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { pathToFileURL } from "node:url";

interface Request {
  id: number;
  path: string;
  mode: string;
}

/** This worker's global scope (the project is type-checked with the window's lib). */
const scope = self as unknown as {
  onmessage: ((event: MessageEvent<Request>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (event: MessageEvent<Request>) => {
  const { id, path, mode } = event.data;
  let db: DatabaseSync | undefined;
  try {
    // mode=rw: a database deleted meanwhile is an error, never re-created empty.
    const url = pathToFileURL(path);
    url.search = "mode=rw";
    db = new DatabaseSync(url, { timeout: 0 } as ConstructorParameters<typeof DatabaseSync>[1]);
    db.exec("PRAGMA busy_timeout = 0");
    const result = db.prepare(`PRAGMA wal_checkpoint(${mode})`).get();
    scope.postMessage({ id, result });
  } catch (err) {
    const { message, errcode, code } = err as Error & { errcode?: number; code?: string };
    scope.postMessage({ id, error: { message, errcode, code } });
  } finally {
    try {
      db?.close();
    } catch { /* closing anyway */ }
  }
};
