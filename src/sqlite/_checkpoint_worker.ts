/**
 * Worker side of {@linkcode checkpoint} and {@linkcode lockForTruncate}: runs `PRAGMA
 * wal_checkpoint(MODE)` on its own short-lived connection, so that copying thousands of WAL
 * frames into the database file and fsyncing it never holds up the main thread's event loop;
 * and the TRUNCATE that continues the WAL cursor (RELIABILITY F11): the write lock taken on a
 * connection of this worker, then given up and followed by the checkpoint in one synchronous
 * step, so that no commit can slip in between unnoticed (see checkpoint.ts).
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { pathToFileURL } from "node:url";

type Request =
  | { id: number; op: "checkpoint"; path: string; mode: string }
  | { id: number; op: "lock"; path: string; expireMs: number }
  | { id: number; op: "truncate" | "release"; session: number };

/** This worker's global scope (the project is type-checked with the window's lib). */
const scope = self as unknown as {
  onmessage: ((event: MessageEvent<Request>) => void) | null;
  postMessage(message: unknown): void;
};

/** A write lock held for a TRUNCATE: its connection, and when it was taken. */
interface Session {
  db: DatabaseSync;
  lockedAt: number;
  dataVersion: number;
  expiry: ReturnType<typeof setTimeout>;
  /** Prepared under the lock: the step after the ROLLBACK parses no SQL. */
  truncate: StatementSync;
  version: StatementSync;
  /** Set once the TRUNCATE ran: the session then holds a read transaction, not the lock. */
  truncated?: boolean;
}

const sessions = new Map<number, Session>();

function open(path: string): DatabaseSync {
  // mode=rw: a database deleted meanwhile is an error, never re-created empty.
  const url = pathToFileURL(path);
  url.search = "mode=rw";
  const db = new DatabaseSync(url, { timeout: 0 } as ConstructorParameters<typeof DatabaseSync>[1]);
  try {
    db.exec("PRAGMA busy_timeout = 0");
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

function close(db: DatabaseSync | undefined): void {
  try {
    if (db?.isTransaction) db.exec("ROLLBACK");
  } catch { /* closing anyway */ }
  try {
    db?.close();
  } catch { /* closing anyway */ }
}

function dataVersion(statement: StatementSync): number {
  return Number((statement.get() as { data_version: number }).data_version);
}

/** Ends a session: the lock (if still held) is released and the connection closed. */
function end(session: number): Session | undefined {
  const held = sessions.get(session);
  if (!held) return undefined;
  sessions.delete(session);
  clearTimeout(held.expiry);
  return held;
}

function handle(request: Request): unknown {
  switch (request.op) {
    case "checkpoint": {
      const db = open(request.path);
      try {
        return db.prepare(`PRAGMA wal_checkpoint(${request.mode})`).get();
      } finally {
        close(db);
      }
    }
    case "lock": {
      const db = open(request.path);
      try {
        // BEGIN IMMEDIATE takes the WAL write lock with a read transaction on the newest
        // snapshot, or fails with SQLITE_BUSY (the caller tries again later): nothing commits
        // until the ROLLBACK, and nothing is written to hold it (no helper table needed).
        db.exec("BEGIN IMMEDIATE");
        const lockedAt = performance.now();
        const version = db.prepare("PRAGMA data_version");
        const truncate = db.prepare("PRAGMA wal_checkpoint(TRUNCATE)");
        const dataVersionLocked = dataVersion(version);
        // A safety net: a main thread that never says go (stuck, or gone) must not hold the
        // application's commits for ever. The session is gone then; a later "truncate" fails.
        const expiry = setTimeout(() => close(end(request.id)?.db), request.expireMs);
        sessions.set(request.id, {
          db,
          lockedAt,
          dataVersion: dataVersionLocked,
          expiry,
          truncate,
          version,
        });
        return { session: request.id, dataVersion: dataVersionLocked };
      } catch (err) {
        close(db);
        throw err;
      }
    }
    case "truncate": {
      const held = sessions.get(request.session);
      if (!held || held.truncated) {
        throw new Error("the write lock had expired before the TRUNCATE");
      }
      const { db, lockedAt, truncate, version } = held;
      held.truncated = true;
      // One synchronous step, no event-loop turn: the lock goes, the checkpoint takes the
      // writer lock microseconds later, then a read transaction begins whose data_version
      // (which counts commits by other connections) tells whether anything was committed
      // since the lock was taken. That read transaction stays until "release": begun on the
      // emptied WAL it holds read lock 0, so no frame can be backfilled and the WAL cannot
      // restart again before the caller's own read transaction is back.
      db.exec("ROLLBACK");
      const lockHeldMs = performance.now() - lockedAt;
      const result = truncate.get() as Record<string, number>;
      db.exec("BEGIN");
      return {
        busy: result.busy,
        log: result.log,
        checkpointed: result.checkpointed,
        dataVersionLocked: held.dataVersion,
        dataVersionAfter: dataVersion(version),
        lockHeldMs,
      };
    }
    case "release": {
      const held = end(request.session);
      const lockHeldMs = held && !held.truncated ? performance.now() - held.lockedAt : 0;
      close(held?.db);
      return { lockHeldMs };
    }
  }
}

scope.onmessage = (event: MessageEvent<Request>) => {
  const { id } = event.data;
  try {
    scope.postMessage({ id, result: handle(event.data) });
  } catch (err) {
    const { message, errcode, code } = err as Error & { errcode?: number; code?: string };
    scope.postMessage({ id, error: { message, errcode, code } });
  }
};
