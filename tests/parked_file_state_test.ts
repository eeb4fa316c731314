/**
 * What the sweep over parked databases compares (`fileStateOf` / `fileStateChanged`: statx
 * through FFI, `Deno.statSync` without it): every kind of change to a database file or its WAL
 * is seen, and an untouched pair is not.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileStateChanged, fileStateOf } from "../src/engine/mod.ts";
import { withTempDir } from "./_monitor_helpers.ts";

/** Waits until the file system's clock (a coarse one: up to 10 ms a tick) has moved on. */
async function pastTick(): Promise<void> {
  const after = Date.now() + 20;
  while (Date.now() <= after) await new Promise((resolve) => setTimeout(resolve, 5));
}

/**
 * Each change made by `changes`, on a fresh pair of files, must be seen; and the pair left
 * alone must not. Returns the names of the changes that were not seen (none expected).
 */
async function unseenChanges(dir: string): Promise<string[]> {
  const changes: Record<string, (db: string) => Promise<void>> = {
    "WAL created": (db) => Deno.writeTextFile(`${db}-wal`, "frames"),
    "database appended": (db) => Deno.writeTextFile(db, "page", { append: true }),
    "database rewritten, same size": async (db) => {
      const file = await Deno.open(db, { write: true });
      await file.write(new TextEncoder().encode("H"));
      file.close();
    },
    "database replaced by a rename": async (db) => {
      await Deno.writeTextFile(`${db}.new`, "header+page");
      await Deno.rename(`${db}.new`, db);
    },
    "database deleted": (db) => Deno.remove(db),
    "WAL appended": (db) => Deno.writeTextFile(`${db}-wal`, "more", { append: true }),
    "WAL deleted": (db) => Deno.remove(`${db}-wal`),
    "WAL replaced, same size": async (db) => {
      await Deno.writeTextFile(`${db}-wal.new`, "frames");
      await Deno.rename(`${db}-wal.new`, `${db}-wal`);
    },
  };
  const unseen: string[] = [];
  let i = 0;
  for (const [name, change] of Object.entries(changes)) {
    const db = join(dir, `t${i++}.db`);
    await Deno.writeTextFile(db, "header+page");
    if (name.startsWith("WAL") && name !== "WAL created") {
      await Deno.writeTextFile(`${db}-wal`, "frames");
    }
    await pastTick();
    const state = fileStateOf(db);
    if (fileStateChanged(db, state)) unseen.push(`${name}: changed before any change`);
    await change(db);
    if (!fileStateChanged(db, state)) unseen.push(name);
  }
  return unseen;
}

Deno.test("parked file state: every change to a database or its WAL is seen, nothing else", async () => {
  await withTempDir(async (dir) => {
    assert.deepEqual(await unseenChanges(dir), []);
    // A database that does not exist (yet): a state too, and its creation is a change.
    const db = join(dir, "later.db");
    const state = fileStateOf(db);
    assert.equal(fileStateChanged(db, state), false);
    await Deno.writeTextFile(db, "");
    assert.equal(fileStateChanged(db, state), true);
  });
});

Deno.test("parked file state: inode, size and times are those Deno.statSync gives (struct statx offsets)", async () => {
  await withTempDir(async (dir) => {
    const db = join(dir, "a.db");
    await Deno.writeTextFile(db, "header+page");
    await Deno.writeTextFile(`${db}-wal`, "frames and more");
    // Four different times: atime, mtime, ctime (now) and btime (the creation, a second
    // before), so that a field read at another field's offset shows. The kernel stamps
    // times from a coarse clock that can lag Date.now() by a tick, so wait well past the
    // second's boundary (CI once saw ctime still in the creation's second).
    const created = Math.floor(Date.now() / 1000);
    while (Date.now() < (created + 1) * 1000 + 100) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await Deno.utime(db, new Date(1_000_000_123), new Date(2_000_000_456));
    const state = fileStateOf(db);
    const [exists, inoLow, inoHigh, size, mtimeSeconds, mtimeNanos, ctimeSeconds, ctimeNanos] =
      state;
    const info = Deno.statSync(db);
    assert.notEqual(exists, 0);
    assert.equal(inoLow + inoHigh * 2 ** 32, info.ino);
    assert.equal(size, info.size);
    assert.equal(mtimeSeconds * 1000 + Math.floor(mtimeNanos / 1e6), 2_000_000_456);
    // Deno's ctime is whole seconds.
    assert.equal(ctimeSeconds, Math.floor(info.ctime!.getTime() / 1000));
    assert.ok(ctimeSeconds > created && ctimeNanos < 1e9);
    assert.equal(state[8 + 3], Deno.statSync(`${db}-wal`).size, "the WAL's size");
  });
});

Deno.test("parked file state: the same without FFI (Deno.statSync)", async () => {
  await withTempDir(async (dir) => {
    const script = join(dir, "check.ts");
    const self = new URL(import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { unseenChangesIn } from ${JSON.stringify(self)};\n` +
        `console.log(JSON.stringify(await unseenChangesIn(${JSON.stringify(dir)})));\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--config",
        new URL("../deno.json", import.meta.url).pathname,
        "--no-prompt",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), []);
  });
});

/** {@linkcode unseenChanges} for the subprocess of the test without FFI. */
export function unseenChangesIn(dir: string): Promise<string[]> {
  return unseenChanges(dir);
}
