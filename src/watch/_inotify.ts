/**
 * File-system events straight from Linux inotify through FFI, in this process.
 *
 * Why not `Deno.watchFs`: it opens and closes every path it reports, and closing any descriptor
 * on a file drops this process's POSIX locks on it, SQLite's included (see fs_watch.ts). inotify
 * itself opens nothing: watches are added by path. Compared with the child process that
 * `Deno.watchFs` otherwise needs, this saves the child's memory (about 60 MB) and the CPU it
 * spent opening, closing and forwarding each event (a quarter of a core under a busy writer).
 *
 * Each watcher owns one inotify descriptor and an eventfd to wake it; a `poll(2)` on both runs
 * on FFI's blocking thread pool, so the event loop never waits. Recursive watches add a watch for
 * each subdirectory, including ones created later.
 *
 * Kernel limits: a subdirectory whose watch the kernel refuses (ENOSPC: `max_user_watches`) is
 * reported through `onUnwatched` and left to the caller's scans (its content is still walked and
 * its subdirectories still tried); {@linkcode InotifyWatcher.rewatch} tries again later. A root
 * path or the instance itself refused for a limit throws {@linkcode WatchLimitError}.
 *
 * @module
 */

import { join } from "node:path";
import { lazyLibC } from "../ffi/mod.ts";
import { addWatchLimit, instanceLimit, WatchLimitError } from "./limit_error.ts";

const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;
const IN_MODIFY = 0x2;
const IN_MOVED_FROM = 0x40;
const IN_MOVED_TO = 0x80;
const IN_CREATE = 0x100;
const IN_DELETE = 0x200;
const IN_DELETE_SELF = 0x400;
const IN_MOVE_SELF = 0x800;
const IN_Q_OVERFLOW = 0x4000;
const IN_IGNORED = 0x8000;
const IN_ONLYDIR = 0x1000000;
const IN_ISDIR = 0x40000000;
const WATCH_MASK = IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE |
  IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
const EAGAIN = 11;
const POLLIN = 1;

const SYMBOLS = {
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type LibC = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** libc through FFI, or null where that is not possible (not Linux, no FFI permission). */
const loadLibC = lazyLibC(SYMBOLS);

/** Whether {@linkcode InotifyWatcher} can work here. */
export function inotifyAvailable(): boolean {
  return loadLibC() !== null;
}

function errno(c: LibC): number {
  const at = c.__errno_location();
  return at ? new Deno.UnsafePointerView(at).getInt32() : 0;
}

/** Options of {@linkcode InotifyWatcher}. */
export interface InotifyOptions {
  /** Watch subdirectories too. */
  recursive: boolean;
  /** Hears about each subdirectory the kernel refused to watch for a limit. */
  onUnwatched?: (error: WatchLimitError) => void;
  /** Which subdirectories a recursive watch descends into (default all). */
  descend?: (dir: string) => boolean;
  /**
   * Asked after each batch of events: until when (performance.now() clock) nobody needs the
   * next one. Until then the watcher does not read; events wait in the kernel, where repeats of
   * the same event merge, so a writer committing many times a second costs one wake-up per
   * pause instead of one per write. 0 (or a past time): read on at once.
   */
  quietUntil?: () => number;
}

/** One watcher: `Deno.FsEvent`s for a set of directories, optionally recursive. */
export class InotifyWatcher implements AsyncIterable<Deno.FsEvent> {
  /** Settles true once every initial watch exists (false if the watcher failed to start). */
  readonly ready: Promise<boolean>;
  #c: LibC;
  #fd: number;
  #wakeFd: number;
  #recursive: boolean;
  #dirs = new Map<number, string>();
  #queue: Deno.FsEvent[] = [];
  /** Paths with a modify event in `#queue` (see `#push`). */
  #queuedModify = new Set<string>();
  #waiting?: (value: void) => void;
  #closed = false;
  #error?: Error;
  #loop: Promise<void>;
  #onUnwatched: (error: WatchLimitError) => void;
  #descend: (dir: string) => boolean;
  #quietUntil?: () => number;
  /** Ends a pause between batches early (see `#pauseUntilQuietEnds`). */
  #endPause?: () => void;

  /**
   * Watches `paths` (and their subdirectories when `options.recursive`, those `descend`
   * accepts). `onUnwatched` hears about each subdirectory the kernel refused to watch for a
   * limit; `quietUntil` may pause reading between batches (see {@linkcode InotifyOptions}).
   * @throws {WatchLimitError} when the inotify instance, its eventfd or a root path's watch is
   * refused for a kernel limit.
   * @throws {Error} when inotify is unavailable or a root path cannot be watched otherwise
   * (`Deno.errors.NotFound` when it does not exist).
   */
  constructor(paths: string[], options: InotifyOptions) {
    const recursive = options.recursive;
    this.#onUnwatched = options.onUnwatched ?? (() => {});
    this.#descend = options.descend ?? (() => true);
    this.#quietUntil = options.quietUntil;
    const c = loadLibC();
    if (!c) throw new Error("inotify is not available");
    this.#c = c;
    this.#recursive = recursive;
    const where = paths.join(", ");
    this.#fd = c.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (this.#fd < 0) {
      const code = errno(c);
      const limit = instanceLimit(code, "inotify_init1");
      if (limit) throw new WatchLimitError(limit, where, code);
      throw new Error(`inotify_init1 failed (errno ${code})`);
    }
    this.#wakeFd = c.eventfd(0, IN_CLOEXEC | IN_NONBLOCK);
    if (this.#wakeFd < 0) {
      const code = errno(c);
      c.close(this.#fd);
      const limit = instanceLimit(code, "eventfd");
      if (limit) throw new WatchLimitError(limit, where, code);
      throw new Error(`eventfd failed (errno ${code})`);
    }
    try {
      for (const path of paths) {
        if (this.#addWatch(path) < 0) {
          const code = errno(c);
          if (code === 2) {
            throw new Deno.errors.NotFound(`cannot watch ${path}: no such directory`);
          }
          const limit = addWatchLimit(code);
          if (limit) throw new WatchLimitError(limit, path, code);
          throw new Error(`cannot watch ${path} (errno ${code})`);
        }
      }
    } catch (err) {
      c.close(this.#fd);
      c.close(this.#wakeFd);
      throw err;
    }
    this.ready = recursive
      ? Promise.all(paths.map((p) => this.#addTree(p))).then(() => !this.#closed, () => false)
      : Promise.resolve(true);
    this.#loop = this.#run();
  }

  /** Stops watching; the iteration ends once the poll thread has returned. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const one = new BigUint64Array([1n]);
    this.#c.write(this.#wakeFd, new Uint8Array(one.buffer), 8n);
    this.#endPause?.();
    this.#wake();
  }

  /** Ends a pause asked for by `quietUntil` now: someone needs the next event at once. */
  resume(): void {
    this.#endPause?.();
  }

  /** Resolves when the poll thread has stopped and the descriptors are closed. */
  get done(): Promise<void> {
    return this.#loop;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Deno.FsEvent> {
    while (true) {
      const event = this.#queue.shift();
      if (event) {
        if (event.kind === "modify") this.#queuedModify.delete(event.paths[0]);
        yield event;
        continue;
      }
      if (this.#closed) break;
      await new Promise<void>((resolve) => this.#waiting = resolve);
    }
    await this.#loop;
    if (this.#error) throw this.#error;
  }

  /**
   * Tries again to watch `dir`, a directory reported through `onUnwatched` (a limit may have
   * been raised, or watches freed). True when it is watched now. Its subdirectories are not
   * touched: each was reported on its own.
   */
  rewatch(dir: string): boolean {
    if (this.#closed) return false;
    return this.#addWatch(dir) >= 0;
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  #addWatch(dir: string): number {
    const wd = this.#c.inotify_add_watch(
      this.#fd,
      new TextEncoder().encode(dir + "\0"),
      WATCH_MASK,
    );
    if (wd >= 0) this.#dirs.set(wd, dir);
    return wd;
  }

  /**
   * Watches every directory under `dir` (not following symlinks). With `report`, also reports
   * each entry found as created: in a directory that just appeared, files made before its watch
   * existed (`mkdir -p a/b/c && touch a/b/c/x`) would otherwise go unseen. Each directory is
   * watched before it is listed, so nothing falls between the two.
   */
  async #addTree(dir: string, report = false): Promise<void> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return; // gone, or unreadable: nothing to watch below it
    }
    for (const entry of entries) {
      if (this.#closed) return;
      const sub = join(dir, entry.name);
      if (report) this.#push("create", [sub]);
      if (entry.isDirectory && this.#descend(sub) && this.#watchOrReport(sub)) {
        await this.#addTree(sub, report);
      }
    }
    if (report) this.#wake();
  }

  #push(kind: Deno.FsEvent["kind"], paths: string[], flag?: Deno.FsEventFlag): void {
    if (kind === "modify") {
      // A commit writes the WAL several times: while a modify of a path waits to be taken,
      // more of them add nothing (the one queued is seen after them all).
      if (this.#queuedModify.has(paths[0])) return;
      this.#queuedModify.add(paths[0]);
    }
    this.#queue.push(flag ? { kind, paths, flag } : { kind, paths });
  }

  async #run(): Promise<void> {
    const c = this.#c;
    const pollFds = new Uint8Array(16); // two struct pollfd { int fd; short events, revents; }
    const view = new DataView(pollFds.buffer);
    view.setInt32(0, this.#fd, true);
    view.setInt16(4, POLLIN, true);
    view.setInt32(8, this.#wakeFd, true);
    view.setInt16(12, POLLIN, true);
    const buf = new Uint8Array(64 * 1024);
    try {
      while (!this.#closed) {
        view.setInt16(6, 0, true);
        view.setInt16(14, 0, true);
        const ready = await c.poll(pollFds, 2n, -1);
        if (this.#closed) break;
        if (ready < 0) {
          if (errno(c) === 4) continue; // EINTR
          throw new Error(`poll failed (errno ${errno(c)})`);
        }
        while (true) {
          const n = Number(c.read(this.#fd, buf, BigInt(buf.length)));
          if (n < 0) {
            if (errno(c) === EAGAIN) break;
            throw new Error(`reading inotify events failed (errno ${errno(c)})`);
          }
          if (n === 0) break;
          this.#parse(buf, n);
        }
        this.#wake();
        await this.#pauseUntilQuietEnds();
      }
    } catch (err) {
      this.#error = err as Error;
    } finally {
      this.#closed = true;
      c.close(this.#fd);
      c.close(this.#wakeFd);
      this.#wake();
    }
  }

  /**
   * Waits until `quietUntil` (asked now, so it reflects the batch before this one: the
   * listeners of this batch run after it) or until {@linkcode resume} or `close`.
   */
  async #pauseUntilQuietEnds(): Promise<void> {
    const wait = (this.#quietUntil?.() ?? 0) - performance.now();
    if (wait < 1 || this.#closed) return;
    const paused = Promise.withResolvers<void>();
    const timer = setTimeout(paused.resolve, wait);
    this.#endPause = paused.resolve;
    await paused.promise;
    clearTimeout(timer);
    this.#endPause = undefined;
  }

  #parse(buf: Uint8Array, length: number): void {
    const view = new DataView(buf.buffer, buf.byteOffset, length);
    const decoder = new TextDecoder();
    for (let at = 0; at + 16 <= length;) {
      const wd = view.getInt32(at, true);
      const mask = view.getUint32(at + 4, true);
      const nameLength = view.getUint32(at + 12, true);
      let end = at + 16;
      while (end < at + 16 + nameLength && buf[end] !== 0) end++;
      const name = decoder.decode(buf.subarray(at + 16, end));
      at += 16 + nameLength;
      if (mask & IN_Q_OVERFLOW) {
        this.#push("other", [], "rescan");
        continue;
      }
      const dir = this.#dirs.get(wd);
      if (dir === undefined) continue;
      if (mask & IN_IGNORED) {
        this.#dirs.delete(wd);
        continue;
      }
      if (mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        this.#push("remove", [dir]);
        continue;
      }
      const path = name ? join(dir, name) : dir;
      if (mask & IN_CREATE) {
        this.#push("create", [path]);
        if ((mask & IN_ISDIR) && this.#recursive) this.#watchNewDirectory(path);
      } else if (mask & IN_MOVED_TO) {
        // A rename's destination: whatever was known under that name is replaced.
        this.#push("rename", [path]);
        if ((mask & IN_ISDIR) && this.#recursive) this.#watchNewDirectory(path);
      } else if (mask & (IN_DELETE | IN_MOVED_FROM)) {
        this.#push("remove", [path]);
      } else if (mask & IN_MODIFY) {
        this.#push("modify", [path]);
      }
    }
  }

  /**
   * Watches the subdirectory `dir`. A watch refused for a kernel limit is reported through
   * `onUnwatched`; true then too, so that what lies below is still walked (and tried).
   */
  #watchOrReport(dir: string): boolean {
    if (this.#addWatch(dir) >= 0) return true;
    const code = errno(this.#c);
    const limit = addWatchLimit(code);
    if (limit === undefined) return false; // gone, or unreadable: nothing to watch below it
    try {
      this.#onUnwatched(new WatchLimitError(limit, dir, code));
    } catch { /* the listener's problem; the watcher goes on */ }
    return true;
  }

  /** A directory appeared inside a recursive watch: watch it and what it already holds. */
  #watchNewDirectory(path: string): void {
    if (!this.#descend(path) || !this.#watchOrReport(path)) return;
    this.#addTree(path, true);
  }
}
