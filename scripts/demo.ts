/**
 * `deno task demo`: sluice's main job end to end on a local file replica.
 *
 * 1. creates a sample database and starts a writer process committing to it;
 * 2. runs `sluice replicate DB file:///…/replica` beside it;
 * 3. stops the writer, stops sluice with SIGTERM (final sync);
 * 4. runs `sluice restore` into a new file and shows that it equals the source.
 *
 * Everything lives in a temporary directory that is removed at the end.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const work = await Deno.makeTempDir({ prefix: "sluice-demo-" });
const dbPath = join(work, "app.db");
const replicaURL = `file://${join(work, "replica")}`;
const restoredPath = join(work, "restored.db");

function step(message: string): void {
  console.log(`\n\x1b[1m==> ${message}\x1b[0m`);
}

function sluice(...args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(root, "main.ts"), ...args],
    stdout: "inherit",
    stderr: "inherit",
  });
}

function tableDigest(path: string): { rows: number; sum: number; integrity: string } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const { rows, sum } = db.prepare(
      "SELECT count(*) AS rows, coalesce(sum(n), 0) AS sum FROM t",
    ).get() as { rows: number; sum: number };
    const { integrity_check } = db.prepare("PRAGMA integrity_check").get() as {
      integrity_check: string;
    };
    return { rows, sum, integrity: integrity_check };
  } finally {
    db.close();
  }
}

let ok = false;
try {
  step(`creating ${dbPath}`);
  const db = new DatabaseSync(dbPath);
  db.exec(
    "PRAGMA journal_mode = wal; CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)",
  );
  db.close();

  step(`sluice replicate ${dbPath} ${replicaURL}`);
  const replicate = sluice("replicate", dbPath, replicaURL).spawn();

  step("writer: 200 transactions at 100/s (some larger than 1000 pages)");
  const writer = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(root, "scripts", "writer.ts"),
      "--db",
      dbPath,
      "--rate",
      "100",
      "--count",
      "200",
      "--big-every",
      "50",
      "--big-pages",
      "1100",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!writer.success) throw new Error("the writer failed");
  console.log(new TextDecoder().decode(writer.stdout).trim());

  step("stopping sluice with SIGTERM (it syncs one last time)");
  replicate.kill("SIGTERM");
  const replicateStatus = await replicate.status;
  if (!replicateStatus.success) throw new Error(`sluice replicate exited ${replicateStatus.code}`);

  step(`sluice ltx ${replicaURL}`);
  await sluice("ltx", replicaURL).output();

  step(`sluice restore -o ${restoredPath} ${replicaURL}`);
  const restore = await sluice(
    "restore",
    "-o",
    restoredPath,
    "--integrity-check",
    "full",
    replicaURL,
  )
    .output();
  if (!restore.success) throw new Error(`sluice restore exited ${restore.code}`);

  step("comparing the restored database with the source");
  const source = tableDigest(dbPath);
  const restored = tableDigest(restoredPath);
  console.log(`source:   ${JSON.stringify(source)}`);
  console.log(`restored: ${JSON.stringify(restored)}`);
  ok = source.rows === restored.rows && source.sum === restored.sum &&
    restored.integrity === "ok";
  console.log(ok ? "\n\x1b[32mthe restore equals the source\x1b[0m" : "\n\x1b[31mMISMATCH\x1b[0m");
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
Deno.exit(ok ? 0 : 1);
