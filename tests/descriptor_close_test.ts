/**
 * The one rule sluice must never break inside its own process: closing any descriptor of a
 * database file drops every POSIX lock the process holds on it, so a descriptor of a database,
 * its `-wal` or its `-shm` may only be closed when no other descriptor of that file is open in
 * the process (no SQLite connection of sluice's still uses it).
 *
 * strace attaches to a running `sluice replicate` (all its threads) and records every open,
 * dup and close with the file each descriptor refers to, while tenants are created, written by
 * processes that commit and exit and by a long-lived writer, parked (which closes everything)
 * and woken again, and finally at shutdown. Any close of a database file's descriptor while
 * another descriptor of the same file stays open is a violation.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabasesInChild,
  restoredRows,
  SluiceProcess,
  tableRows,
  waitFor,
  writeDirConfig,
  WriterProcess,
} from "./_monitor_helpers.ts";

function which(command: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(join(dir, command)).isFile) return join(dir, command);
    } catch { /* not here */ }
  }
  return undefined;
}

const STRACE = which("strace");
const PYTHON = which("python3");

/** Whether this process may attach to another one (ptrace is often refused in containers). */
function canAttach(): boolean {
  if (!STRACE) return false;
  try {
    const scope = Deno.readTextFileSync("/proc/sys/kernel/yama/ptrace_scope").trim();
    return scope === "0" || Deno.uid() === 0;
  } catch {
    return true; // no Yama: classic ptrace rules, the same user may attach
  }
}

/** A database file or its shared-memory file: the files SQLite holds POSIX locks on. */
function isLockedKind(path: string, dir: string): boolean {
  return path.startsWith(dir + "/") && /\.db(-shm)?$/.test(path);
}

const clean = (path: string) => path.replace(/ ?\(deleted\)$/, "");

/**
 * Replays an `strace -f -y` log: which descriptors refer to which file, which byte ranges the
 * process has locked on each file (F_SETLK, F_SETLKW), and every close of a database's or
 * `-shm`'s descriptor while the process held a lock on that file and another descriptor of it
 * stayed open. (SQLite itself closes the descriptors of its connections only once the file's
 * last lock is released, and the last descriptor may go with its locks.)
 */
function closeViolations(log: string, dir: string): string[] {
  const open = new Map<number, string>(); // fd → path
  const locks = new Map<string, Set<string>>(); // path → "start:length" of each locked range
  const violations: string[] = [];
  for (const line of log.split("\n")) {
    const close = /\bclose\((\d+)<([^>]*)>/.exec(line);
    if (close) {
      const path = clean(close[2]);
      open.delete(Number(close[1]));
      if (!isLockedKind(path, dir)) continue;
      const others = [...open].filter(([, p]) => p === path).map(([fd]) => fd);
      const held = locks.get(path);
      if (others.length > 0 && held && held.size > 0) {
        violations.push(
          `${line.trim()} while fd ${others.join(", ")} still open on it and ranges ` +
            `${[...held].join(", ")} locked`,
        );
      }
      if (others.length === 0) locks.delete(path);
      continue;
    }
    const lock =
      /fcntl\(\d+<([^>]*)>, F_SETLKW?, \{l_type=F_(RD|WR|UN)LCK, l_whence=SEEK_SET, l_start=(\d+), l_len=(\d+)/
        .exec(line);
    if (lock) {
      if (/= -1 /.test(line)) continue; // refused: nothing changed
      const path = clean(lock[1]);
      const start = Number(lock[3]);
      const length = Number(lock[4]);
      const held = locks.get(path) ?? new Set<string>();
      locks.set(path, held);
      if (lock[2] !== "UN") {
        held.add(`${start}:${length}`);
        continue;
      }
      for (const range of held) {
        const at = Number(range.split(":")[0]);
        if (at >= start && (length === 0 || at < start + length)) held.delete(range);
      }
      continue;
    }
    // openat, dup, dup2, dup3, fcntl(F_DUPFD): the new descriptor and its file, with -y.
    const opened = /= (\d+)<([^>]*)>\s*$/.exec(line);
    if (opened) open.set(Number(opened[1]), clean(opened[2]));
  }
  return violations;
}

Deno.test("closeViolations: a close while the file is locked and open elsewhere is found", () => {
  const dir = "/t";
  const lock = (fd: number, type: string, start: number, length: number) =>
    `100 fcntl(${fd}</t/a.db>, F_SETLK, {l_type=F_${type}, l_whence=SEEK_SET, l_start=${start}, ` +
    `l_len=${length}}) = 0`;
  const log = [
    '100 openat(AT_FDCWD</>, "/t/a.db", O_RDWR) = 5</t/a.db>',
    lock(5, "RDLCK", 1073741826, 510),
    '101 openat(AT_FDCWD</>, "/t/a.db", O_RDONLY) = 6</t/a.db>',
    "101 close(6</t/a.db>) = 0",
    lock(5, "UNLCK", 0, 0),
    '101 openat(AT_FDCWD</>, "/t/a.db", O_RDONLY) = 6</t/a.db>',
    "101 close(6</t/a.db>) = 0",
    "100 close(5</t/a.db>) = 0",
    '100 openat(AT_FDCWD</>, "/t/a.db-wal", O_RDWR) = 7</t/a.db-wal>',
    '100 openat(AT_FDCWD</>, "/t/a.db-wal", O_RDWR) = 8</t/a.db-wal>',
    "100 close(7</t/a.db-wal>) = 0",
  ].join("\n");
  const found = closeViolations(log, dir);
  assert.equal(found.length, 1, found.join("\n"));
  assert.match(found[0], /close\(6<\/t\/a\.db>\).*fd 5.*1073741826:510/);
});

Deno.test({
  name: "no descriptor of a locked database file is closed while another of it is open (strace)",
  ignore: !canAttach() || PYTHON === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const tmp = await Deno.makeTempDir({ prefix: "sluice-fdclose-" });
  let sluice: SluiceProcess | undefined;
  let strace: Deno.ChildProcess | undefined;
  let writer: WriterProcess | undefined;
  try {
    const dir = join(tmp, "tenants");
    const replica = join(tmp, "replica");
    await Deno.mkdir(dir);
    const config = await writeDirConfig(join(tmp, "sluice.yml"), dir, replica, {
      extra: ["park-after: 300ms"],
    });
    sluice = await SluiceProcess.start(config);
    const traceFile = join(tmp, "strace.log");
    strace = new Deno.Command(STRACE!, {
      args: [
        "-f",
        "-y",
        "-p",
        String(sluice.pid),
        "-e",
        "trace=openat,open,creat,close,dup,dup2,dup3,fcntl",
        "-o",
        traceFile,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // strace says "Process N attached" on stderr for each thread it attached to.
    let straceLog = "";
    const reading = (async () => {
      for await (const chunk of strace!.stderr.pipeThrough(new TextDecoderStream())) {
        straceLog += chunk;
      }
    })();
    await waitFor("strace to attach", () => straceLog.includes("attached"), 10_000);

    const names = ["a", "b"].map((n) => join(dir, `${n}.db`));
    await createDatabasesInChild(names, 3);
    const parkedAll = () =>
      Promise.all(names.map((p) => sluice!.holds(p))).then((h) => !h.some(Boolean));
    // Replicated, then parked (connections and descriptors given back).
    await waitFor("both parked", parkedAll, 30_000);
    // Processes that commit and exit wake them; they park again.
    for (let round = 0; round < 1; round++) {
      for (const path of names) {
        const insert = `import sqlite3; c = sqlite3.connect(${JSON.stringify(path)}); ` +
          `c.execute("PRAGMA busy_timeout = 5000"); ` +
          `c.execute("INSERT INTO t (n, payload) VALUES (?, randomblob(64))", (${
            100 + round
          },)); ` +
          `c.commit()`;
        const out = await new Deno.Command(PYTHON!, { args: ["-c", insert] }).output();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      }
      await waitFor(`round ${round}: woken and parked again`, parkedAll, 30_000);
    }
    // A long-lived connection, then shutdown with it still open.
    writer = WriterProcess.start(names[0], { rate: 50 });
    await waitFor("the writer to commit", async () => (await writer!.acknowledged()) >= 10, 20_000);
    await writer.stop();
    writer = undefined;
    await sluice.stop();
    sluice = undefined;
    // strace ends when the traced process does.
    await strace.status;
    await reading;
    strace = undefined;

    const log = await Deno.readTextFile(traceFile);
    assert.ok(
      /close\(\d+<[^>]*\.db>/.test(log) && /F_SETLK, \{l_type=F_RDLCK/.test(log),
      "the trace holds no lock and no close of a database descriptor: strace saw nothing",
    );
    assert.deepEqual(closeViolations(log, dir), []);
    for (const path of names) {
      assert.deepEqual(await restoredRows(join(replica, path.split("/").pop()!)), tableRows(path));
    }
  } finally {
    await writer?.stop().catch(() => {});
    if (sluice) await sluice.stop().catch(() => {});
    try {
      strace?.kill("SIGKILL");
    } catch { /* gone */ }
    await strace?.status;
    await Deno.remove(tmp, { recursive: true });
  }
});
