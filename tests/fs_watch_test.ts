/**
 * The file watcher sluice uses instead of `Deno.watchFs` in its own process: the events the
 * monitor relies on, recursion into directories created later, a clean close, and above all
 * that watching a database's directory leaves SQLite's POSIX locks in this process alone.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  addWatchLimit,
  instanceLimit,
  isDescriptorExhaustion,
  watchFs,
  WatchLimitError,
} from "../src/watch/mod.ts";
import { createDatabase, runWriter } from "./_sluice.ts";

/** Collects events until `done` returns true for the list so far (or 5 s pass). */
async function collect(
  watcher: AsyncIterable<Deno.FsEvent>,
  done: (events: Deno.FsEvent[]) => boolean,
): Promise<Deno.FsEvent[]> {
  const events: Deno.FsEvent[] = [];
  const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 5000));
  const iterator = watcher[Symbol.asyncIterator]();
  while (!done(events)) {
    const next = await Promise.race([iterator.next(), timeout]);
    if (next === "timeout" || next.done) break;
    events.push(next.value);
  }
  return events;
}

const has = (events: Deno.FsEvent[], kind: string, path: string) =>
  events.some((e) => e.kind === kind && e.paths.includes(path));

Deno.test("fs watch: create, modify, rename and remove, in subdirectories created later", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-watch-" });
  const watcher = watchFs(dir, { recursive: true });
  try {
    assert.equal(await watcher.ready, true);
    const nested = join(dir, "a", "b", "c");
    await Deno.mkdir(nested, { recursive: true });
    // A new directory is watched before its creation is reported: wait for the report.
    const events = await collect(watcher, (e) => has(e, "create", nested));
    const file = join(nested, "t.db");
    await Deno.writeTextFile(file, "one");
    await Deno.writeTextFile(file, "two", { append: true });
    await Deno.rename(file, join(nested, "u.db"));
    await Deno.remove(join(nested, "u.db"));
    events.push(...await collect(watcher, (e) => has(e, "remove", join(nested, "u.db"))));
    assert.ok(has(events, "create", join(dir, "a")), "directory created");
    assert.ok(has(events, "create", file), "file created in a directory made after the start");
    assert.ok(has(events, "modify", file), "file modified");
    assert.ok(has(events, "remove", file), "rename source reported gone");
    assert.ok(has(events, "rename", join(nested, "u.db")), "rename destination reported");
    assert.ok(has(events, "remove", join(nested, "u.db")), "file removed");
  } finally {
    watcher.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fs watch: a file made at once in a new nested directory is reported", async () => {
  // mkdir -p then a file straight away: the file may exist before the new directories' watches
  // do; the watcher reports what it finds when it adds them.
  const dir = await Deno.makeTempDir({ prefix: "sluice-watch-" });
  const watcher = watchFs(dir, { recursive: true });
  try {
    await watcher.ready;
    const files: string[] = [];
    for (let i = 0; i < 5; i++) {
      const nested = join(dir, `x${i}`, "y", "z");
      await Deno.mkdir(nested, { recursive: true });
      const file = join(nested, "t.db");
      await Deno.writeTextFile(file, "x");
      files.push(file);
    }
    const events = await collect(watcher, (e) => files.every((f) => has(e, "create", f)));
    for (const file of files) assert.ok(has(events, "create", file), `${file} reported`);
  } finally {
    watcher.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fs watch: close ends the iteration; a missing directory is an error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-watch-" });
  try {
    const watcher = watchFs(dir, { recursive: false });
    await watcher.ready;
    const drained = (async () => {
      for await (const _ of watcher) { /* nothing happens */ }
    })();
    watcher.close();
    await drained;
    await assert.rejects(async () => {
      const missing = watchFs(join(dir, "missing"), { recursive: false });
      for await (const _ of missing) break;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fs watch: watching a database's directory keeps this process's SQLite locks", async () => {
  // Deno.watchFs opens and closes each path it reports, which drops every POSIX lock this
  // process holds on the file. Our read transaction's lock must survive many WAL events: while
  // it holds, another process cannot RESTART the WAL.
  const dir = await Deno.makeTempDir({ prefix: "sluice-watch-" });
  const path = join(dir, "app.db");
  createDatabase(path);
  const reader = new DatabaseSync(path);
  const watcher = watchFs(dir, { recursive: false });
  try {
    await watcher.ready;
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM t").get();
    await runWriter("--db", path, "--count", "50");
    const events = await collect(watcher, (e) => e.length >= 20);
    assert.ok(has(events, "modify", path + "-wal"), "WAL writes were seen");
    const probe = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { DatabaseSync } from "node:sqlite";
         const db = new DatabaseSync(Deno.args[0]);
         console.log(JSON.stringify(db.prepare("PRAGMA wal_checkpoint(RESTART)").get()));`,
        path,
      ],
      stdout: "piped",
    });
    const out = JSON.parse(new TextDecoder().decode((await probe.output()).stdout));
    assert.equal(out.busy, 1, "the other process saw our reader and could not restart the WAL");
  } finally {
    watcher.close();
    reader.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fs watch: descend keeps a recursive watch out of hidden directories", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-watch-" });
  const hidden = join(dir, ".app.db-sluice", "ltx", "0");
  await Deno.mkdir(hidden, { recursive: true });
  const watcher = watchFs(dir, {
    recursive: true,
    descend: (path) => !path.slice(dir.length + 1).split("/").some((p) => p.startsWith(".")),
  });
  try {
    await watcher.ready;
    await Deno.writeTextFile(join(hidden, "1.ltx"), "x"); // not watched: no event
    await Deno.mkdir(join(dir, "sub"));
    // A new directory is watched before its creation is reported: wait for the report.
    const events = await collect(watcher, (e) => has(e, "create", join(dir, "sub")));
    await Deno.writeTextFile(join(dir, "sub", "t.db"), "x");
    events.push(...await collect(watcher, (e) => has(e, "create", join(dir, "sub", "t.db"))));
    assert.ok(has(events, "create", join(dir, "sub", "t.db")), "visible subdirectory watched");
    assert.ok(!events.some((e) => e.paths.some((p) => p.startsWith(hidden))), "hidden one not");
  } finally {
    watcher.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "fs watch: quietUntil leaves events in the kernel until the pause ends or resume()",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-watch-" });
    let pauseUntil = performance.now() + 60_000; // asked after each batch
    const watcher = watchFs(dir, { recursive: false, quietUntil: () => pauseUntil });
    try {
      const iterator = watcher[Symbol.asyncIterator]();
      const next = async (path: string) => {
        for (;;) {
          const { value, done } = await iterator.next();
          assert.ok(!done, `the watcher ended before an event for ${path}`);
          if (value.paths.includes(path)) return performance.now();
        }
      };
      // The first batch starts a one-minute pause: b's event waits for resume().
      await Deno.writeTextFile(join(dir, "a"), "1");
      await next(join(dir, "a"));
      await Deno.writeTextFile(join(dir, "b"), "1");
      await new Promise((resolve) => setTimeout(resolve, 300));
      pauseUntil = 0;
      const resumedAt = performance.now();
      watcher.resume();
      assert.ok(await next(join(dir, "b")) >= resumedAt, "b was read during the pause");
      // A short pause ends by itself: c's event comes at its end, not before.
      pauseUntil = performance.now() + 400;
      await Deno.writeTextFile(join(dir, "c"), "1");
      await next(join(dir, "c"));
      const pauseEnds = pauseUntil;
      await Deno.writeTextFile(join(dir, "d"), "1");
      assert.ok(await next(join(dir, "d")) >= pauseEnds - 2, "d was read before the pause ended");
    } finally {
      watcher.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("fs watch: kernel limits map to the sysctl to raise", () => {
  assert.equal(addWatchLimit(28), "watches"); // ENOSPC: max_user_watches
  assert.equal(addWatchLimit(12), "watches"); // ENOMEM
  assert.equal(addWatchLimit(13), undefined); // EACCES: not a limit
  assert.equal(instanceLimit(24, "inotify_init1"), "instances"); // EMFILE
  assert.equal(instanceLimit(24, "eventfd"), "descriptors");
  assert.equal(instanceLimit(23, "inotify_init1"), "descriptors"); // ENFILE
  const err = new WatchLimitError("watches", "/srv/tenants/a", 28);
  assert.equal(err.sysctl, "fs.inotify.max_user_watches");
  assert.match(err.message, /\/srv\/tenants\/a.*fs\.inotify\.max_user_watches/);
  assert.match(new WatchLimitError("instances", "/x", 24).message, /max_user_instances/);
  assert.ok(isDescriptorExhaustion(new Error("Too many open files (os error 24)")));
  assert.ok(!isDescriptorExhaustion(new Deno.errors.NotFound("gone")));
});
