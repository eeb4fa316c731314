/**
 * Kernel limits, for real: `sluice replicate` runs in its own user namespace (`unshare -Ur`,
 * no root needed where unprivileged user namespaces are allowed) whose inotify limits are
 * lowered through `/proc/sys/user/max_inotify_watches` / `max_inotify_instances` (per user
 * namespace since Linux 4.9). Directories the kernel refuses to watch fall back to periodic
 * scanning: databases created there, in a directory created later, and commits to databases
 * already replicated must all reach the replica, well before the 30 s reconcile scan could
 * have found them, and restore equal to the source.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  createDatabase,
  hasReplica,
  restoredRows,
  ROOT,
  tableRows,
  waitFor,
  withTempDir,
} from "./_monitor_helpers.ts";

/** Whether `unshare -Ur` can make a user namespace whose inotify limits we may set. */
function canLowerLimits(): boolean {
  try {
    const out = new Deno.Command("unshare", {
      args: ["-Ur", "sh", "-c", "echo 7 > /proc/sys/user/max_inotify_watches"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return out.success;
  } catch {
    return false;
  }
}

const LIMITS_AVAILABLE = Deno.build.os === "linux" && canLowerLimits();
/** Well below the 30 s reconcile: only the fallback scans (every 1 s) can meet it. */
const DEADLINE = 8000;

/** `sluice replicate -c config` in a user namespace with `sysctl` set to `value`. */
function startLimited(config: string, sysctl: string, value: number) {
  // unshare and sh exec into deno: the pid signalled below is sluice itself.
  const script = `echo ${value} > /proc/sys/user/${sysctl} && exec "$0" run -A --quiet ` +
    `"$1" replicate -c "$2"`;
  const child = new Deno.Command("unshare", {
    args: ["-Ur", "sh", "-c", script, Deno.execPath(), join(ROOT, "main.ts"), config],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let log = "";
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
  })();
  return {
    child,
    get log() {
      return log;
    },
    async stop(): Promise<number> {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const status = await child.status;
      await reading;
      return status.code;
    },
  };
}

/** inotify watches held by process `pid` (the `inotify wd:` lines of its descriptors). */
async function inotifyWatches(pid: number): Promise<number> {
  let watches = 0;
  for await (const entry of Deno.readDir(`/proc/${pid}/fdinfo`)) {
    const text = await Deno.readTextFile(`/proc/${pid}/fdinfo/${entry.name}`).catch(() => "");
    watches += text.split("\n").filter((line) => line.startsWith("inotify wd:")).length;
  }
  return watches;
}

function insertRow(path: string, n: number): void {
  const db = new DatabaseSync(path);
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    db.prepare("INSERT INTO t (n, payload) VALUES (?, ?)").run(n, new Uint8Array(8));
  } finally {
    db.close();
  }
}

/**
 * Four subdirectories with a database each; sluice starts under the limit; then a database
 * appears in each subdirectory and in a new one, and every old database gets a row. Each
 * replica must restore equal to its source within {@linkcode DEADLINE}.
 */
async function scenario(sysctl: string, value: number, maxWatches: number): Promise<void> {
  await withTempDir(async (dir) => {
    const tree = join(dir, "tenants"), replica = join(dir, "replica");
    const subdirs = ["a", "b", "c", "d"];
    for (const sub of subdirs) createDatabase(join(tree, sub, "old.db"), 3);
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      [
        "logging: { level: info }",
        "dbs:",
        `  - dir: ${tree}`,
        `    pattern: "**/*.db"`,
        "    recursive: true",
        "    watch: true",
        `    replica: { url: "file://${replica}", sync-interval: 50ms }`,
        "",
      ].join("\n"),
    );
    const sluice = startLimited(config, sysctl, value);
    try {
      const replicaOf = (rel: string) => join(replica, rel);
      await waitFor(
        "the first databases on the replica",
        () => subdirs.every((sub) => hasReplica(replicaOf(`${sub}/old.db`))),
        20_000,
      ).catch((err) => {
        throw new Error(`${(err as Error).message}; log:\n${sluice.log}`);
      });
      // The limit is real: fewer watches than the tree's five directories.
      assert.ok(
        await inotifyWatches(sluice.child.pid) <= maxWatches,
        `at most ${maxWatches} inotify watches`,
      );

      const created = [...subdirs.map((sub) => `${sub}/new.db`), "e/f/new.db"];
      for (const rel of created) createDatabase(join(tree, rel), 5, 100);
      for (const sub of subdirs) insertRow(join(tree, sub, "old.db"), 4);
      const all = [...subdirs.map((sub) => `${sub}/old.db`), ...created];
      const pending = new Set(all);
      await waitFor("every database restored equal to its source", async () => {
        for (const rel of [...pending]) {
          if (!hasReplica(replicaOf(rel))) continue;
          const restored = await restoredRows(replicaOf(rel)).catch(() => []);
          if (JSON.stringify(restored) === JSON.stringify(tableRows(join(tree, rel)))) {
            pending.delete(rel);
          }
        }
        return pending.size === 0;
      }, DEADLINE).catch((err) => {
        throw new Error(`${(err as Error).message}: ${[...pending]}; log:\n${sluice.log}`);
      });
    } finally {
      const code = await sluice.stop();
      assert.equal(code, 0, sluice.log);
    }
  });
}

Deno.test({
  name: "monitor limits: directories over max_user_watches are scanned instead of watched",
  ignore: !LIMITS_AVAILABLE,
  fn: () => scenario("max_inotify_watches", 2, 2),
});

Deno.test({
  name: "monitor limits: without an inotify instance the whole tree is scanned",
  ignore: !LIMITS_AVAILABLE,
  fn: () => scenario("max_inotify_instances", 0, 0),
});
