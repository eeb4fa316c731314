/**
 * Wakes a database's sync when its `-wal` file changes. One `Deno.watchFs` per directory,
 * shared by every database in it, so a directory of many databases costs one inotify watch.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import { type FsWatcher, watchFs } from "../watch/mod.ts";

type Listener = () => void;

/** Until when (performance.now() clock) a database needs no change event; 0: needs it now. */
type QuietUntil = () => number;

interface Subscription {
  listener: Listener;
  quietUntil?: QuietUntil;
}

interface DirectoryWatch {
  watcher: FsWatcher;
  /** Database file name → its subscription. */
  listeners: Map<string, Subscription>;
}

/** Calls a listener whenever `<db>-wal` (or the database file itself) is modified. */
export class WALWatcher {
  #dirs = new Map<string, DirectoryWatch>();
  #onError: (dir: string, err: unknown) => void;

  /** `onError` hears about a watcher that failed; the caller's poll keeps syncs going. */
  constructor(onError: (dir: string, err: unknown) => void = () => {}) {
    this.#onError = onError;
  }

  /**
   * Starts calling `listener` on changes to `dbPath`'s WAL. Returns the unsubscribe.
   *
   * `quietUntil` says until when the database needs no event (its next sync is already
   * scheduled then): while every database of the directory is quiet, the directory's events
   * are left in the kernel, so a writer committing a hundred times a second under a 1 s sync
   * interval wakes this process about once a second rather than for every WAL write.
   */
  watch(dbPath: string, listener: Listener, quietUntil?: QuietUntil): () => void {
    const dir = dirname(dbPath);
    const name = basename(dbPath);
    let entry = this.#dirs.get(dir);
    if (!entry) {
      const listeners = new Map<string, Subscription>();
      // Never Deno.watchFs in this process: it would drop SQLite's locks (see fs_watch.ts).
      const watcher = watchFs(dir, {
        recursive: false,
        quietUntil: () => quietUntilOfAll(listeners),
      });
      entry = { watcher, listeners };
      this.#dirs.set(dir, entry);
      this.#pump(dir, entry);
    }
    const subscription = { listener, quietUntil };
    entry.listeners.set(name, subscription);
    entry.watcher.resume(); // the new database needs its events now
    return () => {
      const current = this.#dirs.get(dir);
      if (!current || current.listeners.get(name) !== subscription) return;
      current.listeners.delete(name);
      if (current.listeners.size === 0) {
        this.#dirs.delete(dir);
        current.watcher.close();
      }
    };
  }

  /** Reads `dbPath`'s directory's events now, ending a pause its quiet times asked for. */
  resume(dbPath: string): void {
    this.#dirs.get(dirname(dbPath))?.watcher.resume();
  }

  /** Stops every watch. */
  close(): void {
    for (const entry of this.#dirs.values()) entry.watcher.close();
    this.#dirs.clear();
  }

  async #pump(dir: string, entry: DirectoryWatch): Promise<void> {
    try {
      for await (const event of entry.watcher) {
        if (event.kind === "access") continue;
        if (event.flag === "rescan") {
          // The kernel's queue overflowed: any database of the directory may have changed.
          for (const { listener } of [...entry.listeners.values()]) listener();
          continue;
        }
        for (const path of event.paths) {
          const name = basename(path);
          const dbName = name.endsWith("-wal") ? name.slice(0, -4) : name;
          entry.listeners.get(dbName)?.listener();
        }
      }
    } catch (err) {
      if (this.#dirs.get(dir) === entry) this.#onError(dir, err);
    }
  }
}

/** The earliest time any database of a directory needs an event (0: one needs it now). */
function quietUntilOfAll(listeners: Map<string, Subscription>): number {
  let until = Infinity;
  for (const { quietUntil } of listeners.values()) {
    const mine = quietUntil?.() ?? 0;
    if (mine <= 0) return 0; // the common case in a directory of tenants: no pause, stop asking
    until = Math.min(until, mine);
  }
  return until === Infinity ? 0 : until;
}
