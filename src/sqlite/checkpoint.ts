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
  result?: CheckpointResult;
  error?: { message: string; errcode?: number; code?: string };
};

let worker: Worker | undefined;
let nextId = 1;
const pending = new Map<
  number,
  { resolve: (r: CheckpointResult) => void; reject: (e: Error) => void }
>();
let idleTimer: ReturnType<typeof setTimeout> | undefined;

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
  if (pending.size > 0) return;
  idleTimer = setTimeout(() => {
    if (pending.size === 0) stopWorker();
  }, IDLE_STOP_MS);
  Deno.unrefTimer(Number(idleTimer));
}

/**
 * Stops the checkpoint worker now if no checkpoint is pending (the next one starts it again).
 * For a caller that knows no checkpoint is coming soon: every database it had open is parked.
 */
export function stopIdleCheckpointWorker(): void {
  if (pending.size === 0) stopWorker();
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
      waiter.resolve(result!);
    }
    scheduleIdleStop();
  };
  created.onerror = (event) => {
    event.preventDefault();
    for (const waiter of pending.values()) {
      waiter.reject(new Error(`checkpoint worker failed: ${event.message}`));
    }
    pending.clear();
    worker = undefined;
  };
  worker = created;
  return created;
}

/**
 * Runs `PRAGMA wal_checkpoint(mode)` on the database at `path` in a worker thread.
 * @throws the SQLite error (with its `errcode`, so a busy error is recognisable as such).
 */
export function checkpoint(path: string, mode: CheckpointMode): Promise<CheckpointResult> {
  clearTimeout(idleTimer);
  const id = nextId++;
  return new Promise<CheckpointResult>((resolve, reject) => {
    pending.set(id, { resolve, reject });
    getWorker().postMessage({ id, path, mode });
  });
}
