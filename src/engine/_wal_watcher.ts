/**
 * Wakes a database's sync when its `-wal` file changes. One `Deno.watchFs` per directory,
 * shared by every database in it, so a directory of many databases costs one inotify watch.
 *
 * @module
 */

import { basename, dirname } from "node:path";
import { type FsWatcher, watchFs } from "../watch/mod.ts";

type Listener = () => void;

interface DirectoryWatch {
  watcher: FsWatcher;
  /** Database file name → listener. */
  listeners: Map<string, Listener>;
}

/** Calls a listener whenever `<db>-wal` (or the database file itself) is modified. */
export class WALWatcher {
  #dirs = new Map<string, DirectoryWatch>();
  #onError: (dir: string, err: unknown) => void;

  /** `onError` hears about a watcher that failed; the caller's poll keeps syncs going. */
  constructor(onError: (dir: string, err: unknown) => void = () => {}) {
    this.#onError = onError;
  }

  /** Starts calling `listener` on changes to `dbPath`'s WAL. Returns the unsubscribe. */
  watch(dbPath: string, listener: Listener): () => void {
    const dir = dirname(dbPath);
    const name = basename(dbPath);
    let entry = this.#dirs.get(dir);
    if (!entry) {
      // Never Deno.watchFs in this process: it would drop SQLite's locks (see fs_watch.ts).
      const watcher = watchFs(dir, { recursive: false });
      entry = { watcher, listeners: new Map() };
      this.#dirs.set(dir, entry);
      this.#pump(dir, entry);
    }
    entry.listeners.set(name, listener);
    return () => {
      const current = this.#dirs.get(dir);
      if (!current || current.listeners.get(name) !== listener) return;
      current.listeners.delete(name);
      if (current.listeners.size === 0) {
        this.#dirs.delete(dir);
        current.watcher.close();
      }
    };
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
        for (const path of event.paths) {
          const name = basename(path);
          const dbName = name.endsWith("-wal") ? name.slice(0, -4) : name;
          entry.listeners.get(dbName)?.();
        }
      }
    } catch (err) {
      if (this.#dirs.get(dir) === entry) this.#onError(dir, err);
    }
  }
}
