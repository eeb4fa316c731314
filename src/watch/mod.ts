/**
 * File-system events with the shape of `Deno.watchFs`, without `Deno.watchFs` in this process:
 * on Linux straight from inotify through FFI (src/watch/_inotify.ts), elsewhere (or without FFI
 * permission) from a child process.
 *
 * Why not `Deno.watchFs` itself: its Linux implementation opens and closes every path it
 * reports (measured with strace on Deno 2.9.6: `openat("app.db-shm", O_RDONLY)` on the
 * watcher thread for each event). Closing any descriptor on a file drops every POSIX lock
 * this process holds on it, so a watcher in the replicating process silently releases
 * SQLite's locks on the `-shm` and database files, including the read mark of the long-running
 * read transaction. Another process can then restart the WAL under sluice and frames are lost.
 * In a child process those opens and closes touch no lock of ours; inotify opens nothing.
 *
 * The child is this same program (`sluice __watch`, or `deno run main.ts __watch` from
 * source), so a compiled binary needs nothing extra. It exits when its stdin closes, so it
 * never outlives the parent.
 *
 * @module
 */

import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import { inotifyAvailable, InotifyWatcher } from "./_inotify.ts";
import type { WatchLimitError } from "./limit_error.ts";

export * from "./limit_error.ts";

/** Options of {@linkcode watchFs}. */
export interface WatchOptions {
  /** Watch subdirectories too. Default true (as `Deno.watchFs`). */
  recursive?: boolean;
  /**
   * Hears about each subdirectory the kernel refused to watch for a limit (inotify only: ENOSPC
   * when `fs.inotify.max_user_watches` is reached). Its changes are not reported: the caller
   * scans it instead, and may call {@linkcode FsWatcher.rewatch} later.
   */
  onUnwatched?: (error: WatchLimitError) => void;
  /**
   * Which subdirectories a recursive watch descends into (inotify only; default all). Each
   * watched directory costs one of the user's `fs.inotify.max_user_watches`, and its events
   * are read and parsed: the directory monitor leaves out sluice's own meta directories
   * (hidden, three per database) this way.
   */
  descend?: (dir: string) => boolean;
  /**
   * Asked after each batch of events (inotify only): until when (performance.now() clock) the
   * caller needs no further event. The watcher reads nothing until then: events wait in the
   * kernel, where repeats merge, so a busy file costs one wake-up per pause rather than one per
   * write. Return 0 to read on at once; {@linkcode FsWatcher.resume} ends a pause early.
   */
  quietUntil?: () => number;
}

/** A running watcher: an async iterable of events, closed with {@linkcode FsWatcher.close}. */
export interface FsWatcher extends AsyncIterable<Deno.FsEvent> {
  /**
   * Settles once the child watches (true) or failed to start (false). A scan that must not
   * miss a file waits for it: changes made before the watch exists are not reported.
   */
  readonly ready: Promise<boolean>;
  /** Stops the child process; the iteration ends. */
  close(): void;
  /**
   * Tries again to watch a directory reported through {@linkcode WatchOptions.onUnwatched}.
   * True when it is watched now.
   */
  rewatch(dir: string): boolean;
  /** Ends a pause asked for through {@linkcode WatchOptions.quietUntil} now. */
  resume(): void;
}

/** The child's first line: the watch exists from here on. */
const READY_LINE = '{"ready":true}';

/** The child side's argument that selects watch mode (`main.ts` dispatches it). */
export const WATCH_COMMAND = "__watch";

/**
 * Watches `paths` (through inotify in this process on Linux, else in a child process) and
 * yields its events. The iteration throws if the watcher fails.
 * @throws {WatchLimitError} (inotify) when a kernel limit refuses the watcher or a root path.
 * @throws {Deno.errors.NotFound} (inotify) when a root path does not exist.
 */
export function watchFs(paths: string | string[], options: WatchOptions = {}): FsWatcher {
  const list = Array.isArray(paths) ? paths : [paths];
  if (inotifyAvailable()) {
    const watcher = new InotifyWatcher(list, {
      ...options,
      recursive: options.recursive !== false,
    });
    return {
      ready: watcher.ready,
      close: () => watcher.close(),
      rewatch: (dir) => watcher.rewatch(dir),
      resume: () => watcher.resume(),
      [Symbol.asyncIterator]: () => watcher[Symbol.asyncIterator](),
    };
  }
  return watchInChild(list, options);
}

/** The portable way: `Deno.watchFs` in a child process, its events as JSON lines. */
function watchInChild(list: string[], options: WatchOptions): FsWatcher {
  const args = [
    ...childPrefix(),
    WATCH_COMMAND,
    options.recursive === false ? "--no-recursive" : "--recursive",
    ...list,
  ];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let closed = false;
  const ready = Promise.withResolvers<boolean>();
  const close = () => {
    ready.resolve(false);
    if (closed) return;
    closed = true;
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    child.stdin.close().catch(() => {});
  };
  async function* events(): AsyncGenerator<Deno.FsEvent> {
    const stderr = new Response(child.stderr).text();
    let buffered = "";
    const decoder = new TextDecoder();
    try {
      for await (const chunk of child.stdout) {
        buffered += decoder.decode(chunk, { stream: true });
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (line === READY_LINE) ready.resolve(true);
          else if (line) yield JSON.parse(line) as Deno.FsEvent;
        }
      }
    } finally {
      ready.resolve(false);
      close();
    }
    const status = await child.status;
    const message = (await stderr).trim();
    if (!closed || (!status.success && status.signal !== "SIGTERM" && message)) {
      throw new Error(`file watcher stopped: ${message || `exit code ${status.code}`}`);
    }
  }
  const iterator = events();
  return {
    ready: ready.promise,
    close,
    rewatch: () => false,
    resume: () => {},
    [Symbol.asyncIterator]: () => iterator,
  };
}

/** How to start this program again: `deno run … main.ts`, or just the compiled binary. */
function childPrefix(): string[] {
  const exe = basename(Deno.execPath()).toLowerCase();
  if (exe === "deno" || exe === "deno.exe") {
    const main = fileURLToPath(new URL("../../main.ts", import.meta.url));
    return ["run", "--allow-read", "--no-prompt", main];
  }
  return [];
}

/**
 * The child side: watches the paths given on the command line and prints one JSON event per
 * line until stdin closes or it is signalled.
 */
export async function runWatchChild(args: string[]): Promise<number> {
  const recursive = !args.includes("--no-recursive");
  const paths = args.filter((a) => a !== "--recursive" && a !== "--no-recursive");
  const watcher = Deno.watchFs(paths, { recursive });
  // The parent closes our stdin when it exits or stops us: then stop too.
  (async () => {
    const buf = new Uint8Array(64);
    while ((await Deno.stdin.read(buf)) !== null) { /* keep waiting */ }
    watcher.close();
  })();
  const encoder = new TextEncoder();
  await writeAll(encoder.encode(READY_LINE + "\n"));
  for await (const event of watcher) {
    if (event.kind === "access") continue;
    await writeAll(encoder.encode(JSON.stringify(event) + "\n"));
  }
  return 0;
}

async function writeAll(bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await Deno.stdout.write(bytes.subarray(offset));
}
