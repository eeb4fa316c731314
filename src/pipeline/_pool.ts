/**
 * The codec worker(s), shared by every job of the process. A worker starts on the first job
 * that needs one and is terminated as soon as it has no job left, so that an idle process holds
 * no thread (and a CLI command or a test exits when its work is done); a long-running process
 * may keep it a while for the next job ({@linkcode keepIdleWorkers}).
 *
 * @module
 */

import type { Reply, Request } from "./_protocol.ts";

/**
 * Workers at most. On the 2-core machine this targets, the main thread (reads, writes, the
 * merge) and one worker (every codec job, interleaved) keep both cores busy: measured on a
 * 256 MiB compaction, a second worker was no faster and cost ~25 MB more peak RSS (each worker
 * is a V8 isolate of ~19 MB with its own garbage-collection slack).
 */
export const MAX_WORKERS = 1;

/** What a job does with the messages its worker sends. */
export type ReplyHandler = (reply: Reply) => void;

interface PooledWorker {
  worker: Worker;
  jobs: Map<number, ReplyHandler>;
  /** Set while the worker has no job and is kept for the next one. */
  idleTimer?: ReturnType<typeof setTimeout>;
}

const workers: PooledWorker[] = [];
let nextId = 1;
/** How long a worker without jobs is kept, ms; 0: terminated at once. */
let idleLingerMs = 0;

/** How long a long-running process (`sluice replicate`) keeps an idle codec worker, ms. */
export const CODEC_WORKER_LINGER_MS = 10_000;

/**
 * Keeps a codec worker `ms` after its last job instead of terminating it at once, for a
 * long-running process whose large syncs come every interval (`sluice replicate`): each new
 * worker blocks the main thread ~35 ms and costs ~40 ms of CPU (a writer of 64 KiB rows at 500
 * a second started 13 in 8 s). 0 (the default, for commands and tests) terminates idle workers
 * now and from then on.
 */
export function keepIdleWorkers(ms: number): void {
  idleLingerMs = Math.max(0, ms);
  if (idleLingerMs === 0) {
    for (const pooled of [...workers]) if (pooled.jobs.size === 0) stopWorker(pooled);
  }
}

/** The nice value of codec workers started from now on, and of those running (0: normal). */
let workerNice = 0;

/**
 * The nice value `sluice replicate` gives its codec workers: compaction and snapshots are
 * background work. On 2 cores, a level-1 compaction of 800 MB competed with the application
 * and the syncs; measured with a writer of 64 KiB blobs at 600 tx/s, workers at nice 10 held
 * the worst commit-to-replica lag under 0.6 s in 3 runs of 3, against 1 s or more in 1 of 3.
 */
export const BACKGROUND_WORKER_NICE = 10;

/**
 * Runs codec workers at a lower CPU priority (`nice`, 0–19), for a process whose codec work is
 * background work next to an application (`sluice replicate`); commands that are the job
 * themselves (restore, snapshot) keep the default. Where the process may not change it (no
 * `--allow-sys`), the workers run at normal priority.
 */
export function lowerWorkerPriority(nice: number): void {
  workerNice = Math.max(0, Math.min(19, Math.trunc(nice)));
  for (const pooled of workers) setNice(pooled);
}

function setNice(pooled: PooledWorker): void {
  if (workerNice === 0) return;
  const request: Request = { type: "priority", id: 0, nice: workerNice };
  pooled.worker.postMessage(request);
}

/**
 * Starts codec workers ahead of the jobs that will use them, so that their start-up (a new
 * isolate, the codec's modules; ~0.1 s each, more on a busy machine) overlaps the caller's
 * other work instead of delaying the first job: up to `count` workers in all. A worker started
 * here that has no job `ms` later is stopped, and so is any still without one when the
 * returned `release` is called (call it once the jobs are opened, or when none will be).
 */
export function prestartWorkers(count: number, ms: number): { release(): void } {
  const started: PooledWorker[] = [];
  while (workers.length < count) {
    const pooled = startWorker();
    pooled.idleTimer = setTimeout(() => {
      if (pooled.jobs.size === 0) stopWorker(pooled);
    }, ms);
    Deno.unrefTimer(pooled.idleTimer as unknown as number);
    started.push(pooled);
  }
  return {
    release() {
      for (const pooled of started.splice(0)) {
        if (pooled.jobs.size === 0 && workers.includes(pooled)) stopWorker(pooled);
      }
    },
  };
}

/** A job's end of the channel to its worker. */
export interface JobChannel {
  readonly id: number;
  /** Sends a request for this job, moving the buffers in `transfer`. */
  send(request: Request, transfer?: Transferable[]): void;
  /** Ends the job (idempotent); the worker stops when it has no other job. */
  release(): void;
}

/**
 * Registers a job on the least busy worker (starting one if there are fewer than `maxWorkers`
 * and each has a job) and returns its channel. A parallel encoder asks for more workers than
 * {@linkcode MAX_WORKERS} for its parts.
 */
export function openJob(handler: ReplyHandler, maxWorkers: number = MAX_WORKERS): JobChannel {
  let pooled = workers.reduce<PooledWorker | undefined>(
    (best, w) => (best === undefined || w.jobs.size < best.jobs.size ? w : best),
    undefined,
  );
  if (pooled === undefined || (pooled.jobs.size > 0 && workers.length < maxWorkers)) {
    pooled = startWorker();
  }
  clearTimeout(pooled.idleTimer);
  pooled.idleTimer = undefined;
  const id = nextId++;
  pooled.jobs.set(id, handler);
  const owner = pooled;
  let released = false;
  return {
    id,
    send(request, transfer = []) {
      if (!released) owner.worker.postMessage(request, transfer);
    },
    release() {
      if (released) return;
      released = true;
      owner.jobs.delete(id);
      if (owner.jobs.size > 0) return;
      if (idleLingerMs === 0) return stopWorker(owner);
      owner.idleTimer = setTimeout(() => {
        if (owner.jobs.size === 0) stopWorker(owner);
      }, idleLingerMs);
      Deno.unrefTimer(owner.idleTimer as unknown as number);
    },
  };
}

/** How many codec workers are running (for tests). */
export function runningWorkers(): number {
  return workers.length;
}

function startWorker(): PooledWorker {
  const worker = new Worker(new URL("./_worker.ts", import.meta.url), { type: "module" });
  const pooled: PooledWorker = { worker, jobs: new Map() };
  worker.onmessage = (event: MessageEvent<Reply>) => {
    pooled.jobs.get(event.data.id)?.(event.data);
  };
  worker.onerror = (event: ErrorEvent) => {
    // The worker itself died (not a job's error, which arrives as a message): fail every job.
    event.preventDefault();
    const message = `the LTX codec worker failed: ${event.message}`;
    for (const [id, handler] of [...pooled.jobs]) {
      handler({ type: "error", id, error: { name: "Error", message } });
    }
    stopWorker(pooled);
  };
  workers.push(pooled);
  setNice(pooled);
  return pooled;
}

function stopWorker(pooled: PooledWorker): void {
  clearTimeout(pooled.idleTimer);
  const at = workers.indexOf(pooled);
  if (at >= 0) workers.splice(at, 1);
  pooled.jobs.clear();
  pooled.worker.terminate();
}
