/**
 * Records the moment each replica file first becomes visible under a directory tree.
 *
 * Both replicators write a temp file and rename it into place, so a file with its final name is
 * complete. The watcher reacts to inotify events (`Deno.watchFs`, recursive: about 0.1 ms after
 * the rename) and also lists the whole tree every `pollMs` as a safety net for directories
 * created before their watch was in place; a file is stamped at whichever sees it first. The
 * benchmark process holds no SQLite connection, so `Deno.watchFs` is safe here (see the brief).
 *
 * @module
 */

import { join } from "node:path";
import { nowMs } from "./_common.ts";

/** Final names of replica files: sluice LTX, Litestream v0.3 WAL segments and snapshots. */
const REPLICA_FILE =
  /^(?:[0-9a-f]{16}-[0-9a-f]{16}\.ltx|[0-9a-f]{8}_[0-9a-f]{8}\.wal\.lz4|[0-9a-f]{8}\.snapshot\.lz4)$/;

/** A running watcher; `seen` maps each replica file path to the time it was first seen. */
export interface ReplicaWatcher {
  readonly seen: Map<string, number>;
  /** Files first seen by the poll rather than by an event (a measure of event coverage). */
  readonly seenByPoll: number;
  /** Stops watching (after one last listing). */
  stop(): Promise<void>;
}

/** Starts watching `root` (created if missing). */
export async function watchReplica(root: string, pollMs = 50): Promise<ReplicaWatcher> {
  await Deno.mkdir(root, { recursive: true });
  const seen = new Map<string, number>();
  let seenByPoll = 0;
  const note = (path: string, at: number, byPoll: boolean) => {
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (!REPLICA_FILE.test(name) || seen.has(path)) return;
    seen.set(path, at);
    if (byPoll) seenByPoll++;
  };
  const watcher = Deno.watchFs(root, { recursive: true });
  const events = (async () => {
    for await (const event of watcher) {
      const at = nowMs();
      if (event.kind === "remove") continue;
      for (const path of event.paths) note(path, at, false);
    }
  })().catch(() => {});

  const list = async (dir: string): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return; // removed meanwhile
    }
    const at = nowMs();
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) await list(path);
      else note(path, at, true);
    }
  };
  let running = true;
  const polling = (async () => {
    while (running) {
      await list(root);
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  })();

  return {
    seen,
    get seenByPoll() {
      return seenByPoll;
    },
    async stop() {
      running = false;
      await polling;
      await list(root);
      watcher.close();
      await events;
    },
  };
}

/** Replica files ordered by the time they were first seen. */
export function byArrival(seen: Map<string, number>): { path: string; at: number }[] {
  return [...seen].map(([path, at]) => ({ path, at })).sort((a, b) => a.at - b.at);
}
