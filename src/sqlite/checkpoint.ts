/**
 * WAL checkpoints off the main thread. `node:sqlite` is synchronous, and a PASSIVE checkpoint
 * of ten thousand frames copies 40 MB into the database file and fsyncs it: measured at 130–220
 * ms on this project's machine, all of it a frozen event loop when run in place. A worker runs
 * it on its own connection instead (a connection in the same process: SQLite coordinates it with
 * the others through its own in-process lock table, so no POSIX lock is disturbed).
 *
 * @module
 */

/** What `PRAGMA wal_checkpoint` returns. */
export interface CheckpointResult {
  /** 1 when the checkpoint could not finish (a reader or writer held it up). */
  busy: number;
  /** Frames in the WAL. */
  log: number;
  /** Frames copied into the database. */
  checkpointed: number;
}

/** Checkpoint modes sluice runs. */
export type CheckpointMode = "PASSIVE" | "FULL" | "RESTART" | "TRUNCATE";

type Reply = {
  id: number;
  result?: unknown;
  error?: { message: string; errcode?: number; code?: string };
};

let worker: Worker | undefined;
let nextId = 1;
const pending = new Map<
  number,
  { resolve: (r: unknown) => void; reject: (e: Error) => void }
>();
let idleTimer: ReturnType<typeof setTimeout> | undefined;
/**
 * Set while a {@linkcode lockForTruncate} session holds a database's write lock: no other
 * request is posted to the worker until it ends, so that the lock is never held while the
 * worker copies another database's frames (the requests run one after the other there).
 */
let session: Promise<void> | undefined;

/**
 * How long an idle worker is kept. Starting one costs the main thread tens of milliseconds
 * (a new V8 isolate), more than a database writing 100 transactions a second costs in a
 * second of syncs; an idle one costs a few MB. A busy database checkpoints every few seconds
 * to minutes, so the worker stays while it does; when no database is left open (all parked),
 * the store lets it go at once ({@linkcode stopIdleCheckpointWorker}).
 */
const IDLE_STOP_MS = 60_000;

function stopWorker(): void {
  clearTimeout(idleTimer);
  worker?.terminate();
  worker = undefined;
}

/**
 * Stops the worker once nothing is pending for a while: it must not keep a process alive, and
 * an idle isolate costs memory.
 */
function scheduleIdleStop(): void {
  clearTimeout(idleTimer);
  if (pending.size > 0 || session) return;
  idleTimer = setTimeout(() => {
    if (pending.size === 0 && !session) stopWorker();
  }, IDLE_STOP_MS);
  Deno.unrefTimer(Number(idleTimer));
}

/**
 * Stops the checkpoint worker now if no checkpoint is pending (the next one starts it again).
 * For a caller that knows no checkpoint is coming soon: every database it had open is parked.
 */
export function stopIdleCheckpointWorker(): void {
  // Never while a write lock is held there: it might outlive the worker's connection.
  if (pending.size === 0 && !session) stopWorker();
}

function getWorker(): Worker {
  if (worker) return worker;
  const created = new Worker(new URL("./_checkpoint_worker.ts", import.meta.url), {
    type: "module",
  });
  created.onmessage = (event: MessageEvent<Reply>) => {
    const { id, result, error } = event.data;
    const waiter = pending.get(id);
    if (!waiter) return;
    pending.delete(id);
    if (error) {
      waiter.reject(Object.assign(new Error(error.message), {
        errcode: error.errcode,
        code: error.code,
      }));
    } else {
      waiter.resolve(result);
    }
    scheduleIdleStop();
  };
  created.onerror = (event) => {
    event.preventDefault();
    for (const waiter of pending.values()) {
      waiter.reject(new Error(`checkpoint worker failed: ${event.message}`));
    }
    pending.clear();
    // Terminated, not just forgotten: its connection may hold a database's write lock (a
    // truncate session), and only the thread's end releases it. The next request starts anew.
    if (worker === created) stopWorker();
    else created.terminate();
  };
  worker = created;
  return created;
}

/** Posts one request to the worker and waits for its answer. */
function request<T>(message: Record<string, unknown>): Promise<T> {
  clearTimeout(idleTimer);
  const id = nextId++;
  return new Promise<T>((resolve, reject) => {
    pending.set(id, { resolve: resolve as (r: unknown) => void, reject });
    getWorker().postMessage({ ...message, id });
  });
}

/**
 * Runs `PRAGMA wal_checkpoint(mode)` on the database at `path` in a worker thread.
 * @throws the SQLite error (with its `errcode`, so a busy error is recognisable as such).
 */
export async function checkpoint(path: string, mode: CheckpointMode): Promise<CheckpointResult> {
  // Checked and posted in one synchronous step: a session may begin at any await.
  while (session) await session;
  return await request<CheckpointResult>({ op: "checkpoint", path, mode });
}

/** What {@linkcode HeldWriteLock.truncate} reports. */
export interface TruncateResult extends CheckpointResult {
  /** `PRAGMA data_version` read under the write lock. */
  dataVersionLocked: number;
  /**
   * `PRAGMA data_version` on the same connection right after the checkpoint: it differs from
   * `dataVersionLocked` when another connection committed anything after the lock was given
   * up (in the microseconds before the checkpoint took the writer lock, or after it).
   */
  dataVersionAfter: number;
  /** How long the write lock was held, as the worker measured it (ms). */
  lockHeldMs: number;
}

/** A database's write lock, held by a connection of the checkpoint worker. */
export interface HeldWriteLock {
  /**
   * Gives the lock up and runs `PRAGMA wal_checkpoint(TRUNCATE)` on the same connection, then
   * begins a read transaction there and reads `PRAGMA data_version` in it, in one synchronous
   * step of the worker (no event-loop turn between). The read transaction stays until
   * {@linkcode release}: begun on the emptied WAL, it keeps the WAL from restarting again
   * until the caller has begun its own.
   * @throws when the lock had expired (see {@linkcode lockForTruncate}) or SQLite failed.
   */
  truncate(): Promise<TruncateResult>;
  /**
   * Ends the session: gives the lock up (when no TRUNCATE ran) or ends the read transaction,
   * and closes the connection. Never throws. @returns how long the lock was held, when it was
   * still held (ms), else 0.
   */
  release(): Promise<number>;
}

/**
 * Takes the write lock of the database at `path` on a connection of the checkpoint worker
 * (`BEGIN IMMEDIATE`), for a TRUNCATE checkpoint that must know that it backfills nothing the
 * caller has not seen: the caller syncs under the lock, ends its own read transaction, then
 * calls {@linkcode HeldWriteLock.truncate}. No other checkpoint runs in the worker meanwhile.
 * The worker gives the lock up by itself after `expireMs` (a caller that never comes back must
 * not hold the application's commits for ever).
 * @throws a busy error when another connection holds the write lock.
 */
export async function lockForTruncate(path: string, expireMs = 2000): Promise<HeldWriteLock> {
  while (session) await session;
  let done!: () => void;
  const current = session = new Promise<void>((resolve) => done = resolve);
  const finish = () => {
    if (session === current) session = undefined;
    done();
    scheduleIdleStop();
  };
  let locked: { session: number };
  try {
    locked = await request({ op: "lock", path, expireMs });
  } catch (err) {
    finish();
    throw err;
  }
  let truncated = false;
  let ended = false;
  return {
    truncate: () => {
      if (truncated || ended) return Promise.reject(new Error("the TRUNCATE was already run"));
      truncated = true;
      return request<TruncateResult>({ op: "truncate", session: locked.session });
    },
    release: async () => {
      if (ended) return 0;
      ended = true;
      try {
        return (await request<{ lockHeldMs: number }>({
          op: "release",
          session: locked.session,
        })).lockHeldMs;
      } catch {
        return 0; // the worker is gone, and its connection with it
      } finally {
        finish();
      }
    },
  };
}
