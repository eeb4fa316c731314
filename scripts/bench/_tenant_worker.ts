/**
 * Worker of scale.ts's discovery row: creates the tenants (each as scale.ts's `createTenant`
 * does: WAL mode, one table, one row, connection closed; with a busy timeout) one after the
 * other at full speed, and posts back when each was created. A synchronous loop on the
 * benchmark's main thread would hold back the watcher that stamps the replica files until the
 * loop ended (every lag then included the rest of the loop: the first tenant's was all of it).
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

/** What the worker is asked: which directory, which file names. */
export interface CreateRequest {
  dbDir: string;
  names: string[];
}

/** [name, ms since the epoch when it was created], in creation order. */
export type Created = [string, number][];

const scope = self as unknown as {
  onmessage: (event: MessageEvent<CreateRequest>) => void;
  postMessage(message: Created): void;
  close(): void;
};

scope.onmessage = ({ data: { dbDir, names } }) => {
  const created: Created = [];
  for (const name of names) {
    const db = new DatabaseSync(`${dbDir}/${name}`);
    // As README asks of applications: sluice, attaching at once, creates its helper tables in
    // the new database, and a commit meeting that write fails at once without a busy timeout.
    db.exec("PRAGMA busy_timeout = 5000");
    db.exec("PRAGMA journal_mode = wal;");
    db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)");
    db.exec("INSERT INTO notes (body) VALUES ('hello')");
    db.close();
    created.push([name, performance.timeOrigin + performance.now()]);
  }
  scope.postMessage(created);
  scope.close();
};
