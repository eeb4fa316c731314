/**
 * The reconcile scan's listing (`CandidateListing`): it finds what a full walk finds, reads a
 * directory again only when its stat changed (or changed too recently to be trusted), and its
 * directory reader (`readVisibleEntries`, getdents64 through FFI) answers as `Deno.readDir` does,
 * with FFI and without.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CandidateListing,
  readVisibleEntries,
  RECENT_CHANGE_MS,
  type VisibleEntries,
} from "../src/discovery/mod.ts";
import { withTempDir } from "./_monitor_helpers.ts";

const RULES = { pattern: "*.db", recursive: true };

/** A tree with candidates at three depths and files that are not candidates. */
async function makeTree(root: string): Promise<void> {
  await Deno.mkdir(join(root, "sub", "deep"), { recursive: true });
  await Deno.mkdir(join(root, ".a.db-sluice")); // hidden: a meta directory
  await Deno.mkdir(join(root, "sub", ".hidden"));
  for (const file of ["a.db", "a.db-wal", ".b.db", "notes.txt", "sub/c.db", "sub/deep/d.db"]) {
    await Deno.writeTextFile(join(root, file), "x");
  }
  await Deno.writeTextFile(join(root, "sub", ".hidden", "e.db"), "x");
  await Deno.writeTextFile(join(root, ".a.db-sluice", "f.db"), "x");
  await Deno.symlink(join(root, "a.db"), join(root, "link.db"));
}

function sorted(paths: Iterable<string>): string[] {
  return [...paths].sort();
}

/**
 * Waits until the file system's clock has moved past the last read: a directory changed in the
 * same tick of its coarse clock (up to 10 ms) as it was read keeps its times, which is why the
 * listing reads a directory changed less than RECENT_CHANGE_MS ago again. The first test moves
 * its clock past that, so it must not change a directory within the tick of a read.
 */
async function pastTick(): Promise<void> {
  const after = Date.now() + 20;
  while (Date.now() <= after) await new Promise((resolve) => setTimeout(resolve, 5));
}

Deno.test("listing: finds the candidates of the tree, and reads only the directories that changed", async () => {
  await withTempDir(async (root) => {
    await makeTree(root);
    // File times an hour old: every directory is settled once read.
    const listing = new CandidateListing(root, RULES, () => Date.now() + 3_600_000);
    assert.equal(await listing.refresh(), 3); // the root, sub, sub/deep
    const expected = ["a.db", "sub/c.db", "sub/deep/d.db"].map((rel) => join(root, rel));
    assert.deepEqual(sorted(listing.paths), expected);
    assert.equal(await listing.refresh(), 0, "nothing changed: nothing read");
    assert.deepEqual(sorted(listing.paths), expected);

    await pastTick();
    // A file written in place changes no directory, and is not what a listing says anyway.
    await Deno.writeTextFile(join(root, "sub", "c.db"), "more", { append: true });
    assert.equal(await listing.refresh(), 0);

    await pastTick();
    // A new file: its directory alone is read again.
    await Deno.writeTextFile(join(root, "sub", "new.db"), "x");
    assert.equal(await listing.refresh(), 1);
    assert.ok(listing.has(join(root, "sub", "new.db")));

    await pastTick();
    // A WAL that comes and goes: read again, the same files.
    await Deno.writeTextFile(join(root, "a.db-wal2"), "x");
    await Deno.remove(join(root, "a.db-wal2"));
    assert.equal(await listing.refresh(), 1);
    assert.equal(listing.paths.size, 4);

    await pastTick();
    // A directory removed: its parent is read again, and what it held is gone.
    await Deno.remove(join(root, "sub", "deep"), { recursive: true });
    assert.equal(await listing.refresh(), 1);
    assert.equal(listing.has(join(root, "sub", "deep", "d.db")), false);

    await pastTick();
    // A directory created with a database in it: found, at any depth.
    await Deno.mkdir(join(root, "sub", "n1", "n2"), { recursive: true });
    await Deno.writeTextFile(join(root, "sub", "n1", "n2", "z.db"), "x");
    assert.equal(await listing.refresh(), 3); // sub, n1, n2
    assert.ok(listing.has(join(root, "sub", "n1", "n2", "z.db")));

    await pastTick();
    // A database renamed away and another renamed in.
    await Deno.rename(join(root, "a.db"), join(root, "sub", "moved.db"));
    assert.equal(await listing.refresh(), 2);
    assert.equal(listing.has(join(root, "a.db")), false);
    assert.ok(listing.has(join(root, "sub", "moved.db")));

    // Everything read on demand.
    assert.equal(await listing.refresh(true), 4);
    assert.deepEqual(
      sorted(listing.paths),
      ["sub/c.db", "sub/moved.db", "sub/n1/n2/z.db", "sub/new.db"].map((rel) => join(root, rel)),
    );

    // The root gone: an error, and nothing listed.
    await Deno.remove(root, { recursive: true });
    await assert.rejects(() => listing.refresh(), Deno.errors.NotFound);
    assert.equal(listing.paths.size, 0);
    await Deno.mkdir(root);
  });
});

Deno.test("listing: a directory read soon after it changed is read again, whatever its stat says", async () => {
  await withTempDir(async (root) => {
    await makeTree(root);
    let ahead = 0;
    const listing = new CandidateListing(root, RULES, () => Date.now() + ahead);
    assert.equal(await listing.refresh(), 3);
    // Just written: a file created in the same tick of the file system's clock would leave the
    // directory's times as they are, so the listing cannot be trusted yet.
    assert.equal(await listing.refresh(), 3);
    ahead = RECENT_CHANGE_MS;
    assert.equal(await listing.refresh(), 3, "read once more, now settled");
    assert.equal(await listing.refresh(), 0);
    await pastTick();
    await Deno.writeTextFile(join(root, "b.db"), "x");
    assert.equal(await listing.refresh(), 1);
    assert.ok(listing.has(join(root, "b.db")));
  });
});

Deno.test("listing: a directory replaced, turned into a file, or the whole root replaced: what it holds now", async () => {
  await withTempDir(async (root) => {
    await makeTree(root);
    const listing = new CandidateListing(root, RULES, () => Date.now() + 3_600_000);
    await listing.refresh();
    await pastTick();
    // sub replaced by another directory of the same name (a new inode).
    await Deno.mkdir(join(root, "other"));
    await Deno.writeTextFile(join(root, "other", "x.db"), "x");
    await Deno.remove(join(root, "sub"), { recursive: true });
    await Deno.rename(join(root, "other"), join(root, "sub"));
    await listing.refresh();
    assert.deepEqual(sorted(listing.paths), [join(root, "a.db"), join(root, "sub", "x.db")]);

    await pastTick();
    // sub turned into a file: a candidate of the root no longer, and nothing below it.
    await Deno.remove(join(root, "sub"), { recursive: true });
    await Deno.writeTextFile(join(root, "sub"), "x");
    await listing.refresh();
    assert.deepEqual(sorted(listing.paths), [join(root, "a.db")]);

    // The root replaced by a new directory: its databases, none of the old ones.
    await Deno.remove(root, { recursive: true });
    await Deno.mkdir(join(root, "t"), { recursive: true });
    await Deno.writeTextFile(join(root, "t", "n.db"), "x");
    await listing.refresh();
    assert.deepEqual(sorted(listing.paths), [join(root, "t", "n.db")]);
  });
});

Deno.test("listing: the pattern and recursive rules are those of the walk", async () => {
  await withTempDir(async (root) => {
    await makeTree(root);
    await Deno.writeTextFile(join(root, "sub", "a2.db"), "x");
    const flat = new CandidateListing(root, { pattern: "*.db", recursive: false });
    assert.equal(await flat.refresh(), 1, "only the root is read");
    assert.deepEqual(sorted(flat.paths), [join(root, "a.db")]);
    const nested = new CandidateListing(root, { pattern: "sub/a*.db", recursive: true });
    await nested.refresh();
    assert.deepEqual(sorted(nested.paths), [join(root, "sub", "a2.db")]);
  });
});

/**
 * The descriptors this process has open on `root` or below it. Only those: `deno test
 * --parallel` runs other test files in this same process, whose descriptors come and go.
 */
function openDescriptorsUnder(root: string): number {
  let count = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      if (target === root || target.startsWith(`${root}/`)) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

Deno.test("readVisibleEntries: closes every directory it opens, whatever the outcome", async () => {
  await withTempDir(async (root) => {
    await makeTree(root);
    const before = openDescriptorsUnder(root);
    for (let i = 0; i < 50; i++) {
      await readVisibleEntries(root);
      await assert.rejects(() => readVisibleEntries(join(root, "missing")));
      await assert.rejects(() => readVisibleEntries(join(root, "a.db")));
    }
    await Promise.all(Array.from({ length: 20 }, () => readVisibleEntries(root)));
    assert.equal(openDescriptorsUnder(root), before);
  });
});

/** What `Deno.readDir` says, as {@linkcode readVisibleEntries} says it. */
async function byDenoReadDir(path: string): Promise<VisibleEntries> {
  const entries: VisibleEntries = { files: [], dirs: [] };
  for await (const entry of Deno.readDir(path)) {
    if (entry.name.startsWith(".")) continue;
    if (entry.isFile) entries.files.push(entry.name);
    else if (entry.isDirectory) entries.dirs.push(entry.name);
  }
  return entries;
}

function normalized(entries: VisibleEntries): VisibleEntries {
  return { files: [...entries.files].sort(), dirs: [...entries.dirs].sort() };
}

Deno.test("readVisibleEntries: the visible files and directories, as Deno.readDir lists them, with FFI and without", async () => {
  await withTempDir(async (root) => {
    await makeTree(root);
    // Enough entries for several getdents64 buffers, and names that are not ASCII.
    for (let i = 0; i < 3000; i++) await Deno.writeTextFile(join(root, `tenant-${i}.db`), "");
    for (let i = 0; i < 300; i++) await Deno.mkdir(join(root, `.tenant-${i}.db-sluice`));
    await Deno.writeTextFile(join(root, "é–ü.db"), "");
    await Deno.mkdir(join(root, "dir é"));
    const expected = normalized(await byDenoReadDir(root));
    assert.equal(expected.files.length, 3000 + 4); // a.db, a.db-wal, notes.txt, é–ü.db; no link
    assert.deepEqual(normalized(await readVisibleEntries(root)), expected);
    await assert.rejects(() => readVisibleEntries(join(root, "missing")), Deno.errors.NotFound);
    await assert.rejects(() => readVisibleEntries(join(root, "a.db")));

    // Without FFI permission: Deno.readDir, the same answer.
    const script = join(root, "..", `list-${crypto.randomUUID()}.ts`);
    const module = new URL("../src/discovery/mod.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { readVisibleEntries } from ${JSON.stringify(module)};\n` +
        `console.log(JSON.stringify(await readVisibleEntries(${JSON.stringify(root)})));\n`,
    );
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--config",
          new URL("../deno.json", import.meta.url).pathname,
          "--no-prompt",
          "--allow-read",
          "--allow-env",
          script,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.deepEqual(normalized(JSON.parse(new TextDecoder().decode(out.stdout))), expected);
    } finally {
      await Deno.remove(script);
    }
  });
});
