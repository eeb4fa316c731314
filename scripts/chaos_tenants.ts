/**
 * Campaign (f), tenants: databases deleted and re-created under the same names in a watched
 * `dir:` (issue 21 item 4), every operation from a short-lived process (python3's `sqlite3`):
 * create, write, delete, move (the database with its `-wal` and `-shm`, over another tenant or
 * not, sometimes with a new database at the old name at once), re-create the same names,
 * remove and re-create whole subdirectories (their meta directories go with them). In the
 * second half sluice is stopped now and then while tenants are deleted and re-created behind
 * its back. An application operation that fails (a corrupt or emptied database) fails the
 * campaign.
 *
 * Every database a tenant name ever held carries its own generation number in each row, and
 * each generation numbers its rows 1, 2, 3… So any state restored from any replica, latest or
 * at any point in time, must pass `integrity_check`, hold rows of one generation only, and be
 * a prefix 1..m of that generation's rows: a restore that mixes two databases shows up as two
 * generations, a gap or a corrupt file. The latest restore of every surviving tenant must
 * equal its source database (sluice's restore and, when available, Litestream's).
 *
 * Also measured, over the first half (one sluice process): its resident memory before the
 * churn, during it, and once the churned tenants are gone.
 *
 *   deno run -A scripts/chaos_tenants.ts [--seconds N] [--seed S]
 *
 * @module
 */

import { dirname, join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { litestreamRestore, oracleAvailable } from "../tests/_oracle.ts";
import {
  campaign,
  type CampaignResult,
  type Log,
  Rng,
  sleep,
  spawnSluice,
  until,
} from "./chaos_lib.ts";
import type { SluiceProcess } from "./chaos_lib.ts";

/** Options of {@linkcode tenantsCampaign}. */
export interface TenantsOptions {
  /** How long the churn runs, ms (sluice's stopped phases included). */
  durationMs: number;
  seed: number;
  log: Log;
  /** Operations run at once (on different tenants). Default 2. */
  concurrency?: number;
}

/** The python3 side of every operation: one short-lived process, one connection at most. */
const OPERATION = `
import os, shutil, sqlite3, sys
op, path = sys.argv[1], sys.argv[2]
def fill(c, gen, first, rows, size):
    for n in range(first, first + rows):
        c.execute("INSERT INTO t (gen, n, payload) VALUES (?, ?, ?)",
                  (gen, n, bytes([(gen + n) % 251]) * size))
if op == "create":
    gen, rows, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        sys.exit("exists: " + path)
    c = sqlite3.connect(path, timeout=10, isolation_level=None)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("BEGIN")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, gen INTEGER, n INTEGER, payload BLOB)")
    fill(c, gen, 1, rows, size)
    c.execute("COMMIT")
    c.close()
elif op == "write":
    gen, first, rows, size = (int(a) for a in sys.argv[3:7])
    c = sqlite3.connect(path, timeout=10, isolation_level=None)
    c.execute("BEGIN IMMEDIATE")
    fill(c, gen, first, rows, size)
    c.execute("COMMIT")
    c.close()
elif op == "delete":
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
elif op == "rename":
    # mv with the side files; a side file the source lacks must not stay at the target, or
    # SQLite would apply the target's old WAL to the database moved in.
    target = sys.argv[3]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, target + suffix)
        elif os.path.exists(target + suffix):
            os.remove(target + suffix)
    if len(sys.argv) > 4:
        # Rotation: a new database under the old name at once.
        gen, rows, size = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        c = sqlite3.connect(path, timeout=10, isolation_level=None)
        c.execute("PRAGMA journal_mode=wal")
        c.execute("BEGIN")
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, gen INTEGER, n INTEGER, payload BLOB)")
        fill(c, gen, 1, rows, size)
        c.execute("COMMIT")
        c.close()
elif op == "mv":
    os.rename(path, sys.argv[3])
elif op == "rmdir":
    # As a user would: rm -rf again while something still appears in it (sluice's last writes).
    attempts = 0
    while os.path.exists(path) and attempts < 50:
        attempts += 1
        shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        sys.exit("cannot remove " + path)
    print(attempts)
else:
    sys.exit("unknown operation " + op)
`;

/** What the campaign knows a tenant name holds now. */
interface Tenant {
  gen: number;
  rows: number;
}

/** A tenant name and where it lives. */
const NAMES = ["a.db", "b.db", "c.db", "s1/a.db", "s1/b.db", "s2/a.db", "s2/b.db", "s2/c.db"];

let python: Promise<string> | undefined;

/**
 * The python3 interpreter itself: `python3` may be a shim (pyenv) that costs half a second per
 * start, more than the operation.
 */
function pythonExecutable(): Promise<string> {
  python ??= new Deno.Command("python3", { args: ["-c", "import sys; print(sys.executable)"] })
    .output()
    .then((out) => new TextDecoder().decode(out.stdout).trim() || "python3", () => "python3");
  return python;
}

/**
 * Runs one tenant operation in a short-lived python3 process (its only SQLite connection, if
 * any, is closed when it exits); resolves to what it printed.
 *
 * - `create PATH GEN ROWS SIZE`: a new WAL-mode database, table `t` with rows n = 1..ROWS;
 * - `write PATH GEN FIRST ROWS SIZE`: rows n = FIRST.. in one transaction;
 * - `delete PATH`: the database and its `-wal` and `-shm`;
 * - `rename PATH TARGET [GEN ROWS SIZE]`: the database with its side files (replacing the
 *   target's), then with GEN… a new database at PATH at once;
 * - `mv PATH TARGET`: one file, as `mv` does;
 * - `rmdir PATH`: `rm -rf`, repeated while something reappears in it.
 * @throws {Error} with python's stderr when the operation failed.
 */
export async function tenantOp(args: string[]): Promise<string> {
  const out = await new Deno.Command(await pythonExecutable(), {
    args: ["-c", OPERATION, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `python3 ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** The churn: a model of what each name holds, kept in step with the operations it runs. */
class Churn {
  readonly tenants = new Map<string, Tenant>();
  readonly counts: Record<string, number> = {};
  /** Operations of the application that failed (each one a failure of the campaign). */
  readonly failures: string[] = [];
  #busy = new Set<string>();
  #nextGen = 1;
  #rng: Rng;
  #dir: string;

  constructor(dir: string, rng: Rng) {
    this.#dir = dir;
    this.#rng = rng;
  }

  /** Runs one random operation on names nobody else is working on. */
  async step(): Promise<void> {
    const rng = this.#rng;
    const free = NAMES.filter((name) => !this.#busy.has(name));
    if (free.length === 0) return await sleep(5);
    const name = rng.pick(free);
    const tenant = this.tenants.get(name);
    const roll = rng.next();
    if (!tenant) {
      // Mostly re-create the name; sometimes move another tenant in, or drop a whole directory.
      if (roll < 0.15 && name.includes("/")) return await this.#rmdir(name.split("/")[0]);
      const sources = free.filter((other) => other !== name && this.tenants.has(other));
      if (roll < 0.35 && sources.length > 0) return await this.#rename(rng.pick(sources), name);
      return await this.#create(name);
    }
    if (roll < 0.55) return await this.#write(name, tenant);
    if (roll < 0.75) return await this.#delete(name);
    if (roll < 0.85) {
      // Moved to another name (over the tenant there, if any), sometimes replaced at once.
      const targets = free.filter((other) => other !== name);
      if (targets.length > 0) {
        return await this.#rename(name, rng.pick(targets), rng.next() < 0.5);
      }
    }
    const sub = name.includes("/") ? name.split("/")[0] : undefined;
    if (sub && roll < 0.9) return await this.#rmdir(sub);
    return await this.#delete(name);
  }

  /** Marks `names` busy at once (before any await), runs the operation, frees them. */
  async #run(names: string[], op: string, args: () => Promise<string[]>): Promise<void> {
    for (const name of names) this.#busy.add(name);
    try {
      const printed = await tenantOp([op === "rotate" ? "rename" : op, ...await args()]);
      this.counts[op] = (this.counts[op] ?? 0) + 1;
      // rm -rf that had to be repeated: something was written into the directory meanwhile.
      if (op === "rmdir" && Number(printed) > 1) {
        this.counts["rmdir repeated"] = (this.counts["rmdir repeated"] ?? 0) + 1;
      }
    } catch (err) {
      // The application's own database failed (corrupt, locked): a failure of the campaign,
      // reported at the end; the tenant is dropped so that the churn goes on.
      const at = new Date().toISOString().slice(11, 23);
      this.failures.push(
        `${at} ${op} ${names.join(" ")}: ${(err as Error).message.split("\n").at(-1)}`,
      );
      for (const name of names) {
        this.tenants.delete(name);
        await tenantOp(["delete", this.#path(name)]).catch(() => {});
      }
    } finally {
      for (const name of names) this.#busy.delete(name);
    }
  }

  #path(name: string): string {
    return join(this.#dir, name);
  }

  #size(): number {
    return this.#rng.next() < 0.2 ? this.#rng.int(2000, 9000) : this.#rng.int(10, 300);
  }

  async #create(name: string): Promise<void> {
    const gen = this.#nextGen++;
    const rows = this.#rng.int(1, 20);
    this.tenants.set(name, { gen, rows });
    const args = [this.#path(name), `${gen}`, `${rows}`, `${this.#size()}`];
    await this.#run([name], "create", () => Promise.resolve(args));
  }

  async #write(name: string, tenant: Tenant): Promise<void> {
    const rows = this.#rng.int(1, 30);
    const first = tenant.rows + 1;
    tenant.rows += rows;
    const args = [this.#path(name), `${tenant.gen}`, `${first}`, `${rows}`, `${this.#size()}`];
    await this.#run([name], "write", () => Promise.resolve(args));
  }

  async #delete(name: string): Promise<void> {
    this.tenants.delete(name);
    await this.#run([name], "delete", () => Promise.resolve([this.#path(name)]));
  }

  async #rename(from: string, to: string, rotate = false): Promise<void> {
    const tenant = this.tenants.get(from)!;
    this.tenants.delete(from);
    this.tenants.set(to, tenant);
    const extra: string[] = [];
    if (rotate) {
      const gen = this.#nextGen++;
      const rows = this.#rng.int(1, 20);
      this.tenants.set(from, { gen, rows });
      extra.push(`${gen}`, `${rows}`, `${this.#size()}`);
    }
    await this.#run([from, to], rotate ? "rotate" : "rename", async () => {
      await Deno.mkdir(dirname(this.#path(to)), { recursive: true });
      return [this.#path(from), this.#path(to), ...extra];
    });
  }

  async #rmdir(sub: string): Promise<void> {
    const inside = NAMES.filter((name) => name.startsWith(`${sub}/`));
    if (inside.some((name) => this.#busy.has(name))) return;
    for (const name of inside) this.tenants.delete(name);
    await this.#run(inside, "rmdir", () => Promise.resolve([join(this.#dir, sub)]));
  }
}

/** Resident set size of a process, bytes (Linux). */
export async function residentBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return kib ? Number(kib[1]) * 1024 : 0;
}

/** Rows of table `t` in id order, with SQLite's check of the file. */
export interface TenantContent {
  integrity: string;
  /** Absent when the restored state predates the table. */
  rows?: { gen: number; n: number; payload: string }[];
}

/** Reads a tenant database (or a restored copy); a file SQLite cannot read fails `integrity`. */
export function readTenant(path: string): TenantContent {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const integrity = (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
      .integrity_check;
    const table = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 't'").get();
    if (!table) return { integrity };
    const rows = (db.prepare("SELECT gen, n, hex(payload) AS payload FROM t ORDER BY id").all() as {
      gen: number;
      n: number;
      payload: string;
    }[]).map((r) => ({ gen: Number(r.gen), n: Number(r.n), payload: r.payload }));
    return { integrity, rows };
  } catch (err) {
    // A file SQLite cannot even read (malformed, not a database) fails the check like this.
    return { integrity: `unreadable: ${(err as Error).message}` };
  } finally {
    db?.close();
  }
}

/**
 * Why `content` cannot be a state of one tenant database (corrupt, rows of two databases, not
 * a prefix 1..m of one database's rows), or undefined when it can.
 */
export function mixProblem(content: TenantContent): string | undefined {
  if (content.integrity !== "ok") return `integrity_check: ${content.integrity.slice(0, 200)}`;
  const rows = content.rows ?? [];
  const gens = new Set(rows.map((r) => r.gen));
  if (gens.size > 1) return `rows of ${gens.size} databases (generations ${[...gens].join(", ")})`;
  for (let i = 0; i < rows.length; i++) {
    if (rows[i].n !== i + 1) return `row ${i + 1} has n = ${rows[i].n}: not a prefix`;
  }
  return undefined;
}

/** Whether two states hold the same rows. */
export function sameContent(a: TenantContent, b: TenantContent): boolean {
  return JSON.stringify(a.rows ?? []) === JSON.stringify(b.rows ?? []);
}

/** Every replica (a directory holding `ltx/`) under `root`, relative paths. */
export async function replicaDirs(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(join(root, rel))) {
      if (!entry.isDirectory) continue;
      if (entry.name === "ltx") found.push(rel);
      else await walk(rel === "" ? entry.name : `${rel}/${entry.name}`);
    }
  };
  await walk("");
  return found.sort();
}

/** What the checks of one replica found. */
export interface HistoryCheck {
  pointsInTime: number;
  problems: string[];
}

/**
 * Restores `replicaDir` at every TXID boundary its files offer (up to `limit`, spread over the
 * range) and at a few timestamps; each state must be one database's prefix.
 */
export async function checkHistory(
  replicaDir: string,
  work: string,
  limit = 24,
): Promise<HistoryCheck> {
  const client = new FileReplicaClient(replicaDir);
  const problems: string[] = [];
  let pointsInTime = 0;
  try {
    const txids = new Set<number>();
    const times = new Set<number>();
    for (let level = 0; level <= 9; level++) {
      for await (const f of client.ltxFiles(level)) {
        txids.add(f.maxTXID);
        times.add(f.createdAt.getTime() + 1);
      }
    }
    const pick = <T>(all: T[]) =>
      all.length <= limit ? all : all.filter((_, i) => i % Math.ceil(all.length / limit) === 0);
    const targets = [
      ...pick([...txids].sort((a, b) => a - b)).map((txid) => ({ txid })),
      ...pick([...times].sort((a, b) => a - b)).slice(0, 8).map((t) => ({
        timestamp: new Date(t),
      })),
    ];
    for (const target of targets) {
      const out = join(work, `pit-${crypto.randomUUID()}.db`);
      try {
        await restore(client, { outputPath: out, ...target });
      } catch (err) {
        // A TXID that only a deleted finer-level file ended at is not restorable: not a mix.
        if ((err as Error).name === "TxNotAvailableError") continue;
        problems.push(`restore at ${JSON.stringify(target)}: ${(err as Error).message}`);
        continue;
      }
      pointsInTime++;
      try {
        const problem = mixProblem(readTenant(out));
        if (problem) problems.push(`at ${JSON.stringify(target)}: ${problem}`);
      } finally {
        for (const suffix of ["", "-wal", "-shm"]) await Deno.remove(out + suffix).catch(() => {});
      }
    }
  } finally {
    await client.close();
  }
  return { pointsInTime, problems };
}

/** Runs the campaign in a temp directory (removed when it passes). */
export function tenantsCampaign(options: TenantsOptions): Promise<CampaignResult> {
  return campaign("tenants", options.log, async (notes) => {
    const root = await Deno.makeTempDir({ prefix: "sluice-chaos-tenants-" });
    let passed = false;
    let sluice: SluiceProcess | undefined;
    try {
      const result = await run(root, options, notes, (p) => sluice = p);
      passed = true;
      return result;
    } finally {
      await sluice?.stop("SIGKILL");
      if (passed) await Deno.remove(root, { recursive: true });
      else notes.push(`kept ${root} for inspection`);
    }
  });
}

async function run(
  root: string,
  options: TenantsOptions,
  notes: string[],
  track: (p: SluiceProcess | undefined) => void,
): Promise<string> {
  const { seed, log } = options;
  const dir = join(root, "tenants");
  const replicaRoot = join(root, "replica");
  const work = join(root, "work");
  await Deno.mkdir(dir);
  await Deno.mkdir(work);
  const config = join(root, "sluice.yml");
  await Deno.writeTextFile(
    config,
    [
      "logging: { level: info }",
      "snapshot: { interval: 6s, retention: 12s }",
      "levels: [{ interval: 1s }, { interval: 4s }]",
      "l0-retention: 2s",
      "dbs:",
      `  - dir: ${dir}`,
      '    pattern: "*.db"',
      "    recursive: true",
      "    watch: true",
      "    monitor-interval: 250ms",
      "    checkpoint-interval: 2s",
      "    min-checkpoint-page-count: 64",
      `    replica: { url: "file://${replicaRoot}", sync-interval: 50ms }`,
    ].join("\n") + "\n",
  );
  const rng = new Rng(seed);
  const churn = new Churn(dir, rng);
  const logs: string[] = [];
  const start = async () => {
    const p = spawnSluice(["replicate", "-c", config], { NO_COLOR: "1" });
    track(p);
    await until("sluice to watch the directory", () => / watching directory /.test(p.stderr()));
    return p;
  };
  const stop = async (p: SluiceProcess) => {
    const { code, stderr } = await p.stop("SIGTERM");
    track(undefined);
    logs.push(stderr);
    await Deno.writeTextFile(join(root, `sluice-${logs.length}.log`), stderr); // for inspection
    if (code !== 0) throw new Error(`sluice exited ${code} on SIGTERM:\n${stderr.slice(-3000)}`);
  };

  // A few tenants first, then sluice, then its memory figure before the churn.
  for (let i = 0; i < 4; i++) await churn.step();
  let sluice = await start();
  await sleep(1500);
  const rss = [await residentBytes(sluice.pid)];

  // First half: one sluice process throughout, its memory sampled (the first part of the
  // churn warms it up: SQLite, the checkpoint worker, compaction). Second half: sluice is
  // stopped now and then while tenants are deleted and re-created behind its back.
  const concurrency = options.concurrency ?? 2;
  const started = performance.now();
  const stopsFrom = started + options.durationMs / 2;
  let nextSample = started + options.durationMs / 8;
  let stops = 0;
  let nextStop = stopsFrom;
  while (performance.now() - started < options.durationMs) {
    const now = performance.now();
    if (now >= nextSample && now < stopsFrom) {
      rss.push(await residentBytes(sluice.pid));
      nextSample += options.durationMs / 8;
    }
    if (now >= nextStop) {
      // Stopped: delete and re-create names behind sluice's back, then start it again.
      if (stops === 0) {
        // Let it settle: the churned tenants are gone and the survivors idle.
        await sleep(5000);
        rss.push(await residentBytes(sluice.pid));
      }
      await stop(sluice);
      stops++;
      for (let i = rng.int(3, 10); i > 0; i--) await churn.step();
      sluice = await start();
      nextStop = performance.now() + rng.int(8_000, 20_000);
      continue;
    }
    await Promise.all(Array.from({ length: concurrency }, () => churn.step()));
    await sleep(rng.int(0, 40));
  }
  await stop(sluice);

  // Every surviving tenant's latest restore equals its source.
  const problems: string[] = churn.failures.map((failure) => `application: ${failure}`);
  const oracle = oracleAvailable();
  for (const [name, tenant] of churn.tenants) {
    const source = readTenant(join(dir, name));
    const expected = mixProblem(source) ??
      (source.rows?.length === tenant.rows
        ? undefined
        : `source holds ${source.rows?.length} rows, the application wrote ${tenant.rows}`);
    if (expected) problems.push(`${name}: source database: ${expected}`);
    const out = join(work, `latest-${name.replaceAll("/", "_")}`);
    try {
      await restore(new FileReplicaClient(join(replicaRoot, name)), { outputPath: out });
      const restored = readTenant(out);
      if (!sameContent(restored, source)) {
        problems.push(
          `${name}: latest restore differs from the source (gen ${tenant.gen}, ${tenant.rows} ` +
            `rows; restored ${restored.rows?.length ?? 0} rows of generations ` +
            `${[...new Set(restored.rows?.map((r) => r.gen))].join(",")})`,
        );
      }
    } catch (err) {
      problems.push(`${name}: latest restore failed: ${(err as Error).message}`);
    }
    if (oracle) {
      const theirs = join(work, `litestream-${name.replaceAll("/", "_")}`);
      try {
        await litestreamRestore(join(replicaRoot, name), theirs);
        if (!sameContent(readTenant(theirs), source)) {
          problems.push(`${name}: Litestream's restore differs from the source`);
        }
      } catch (err) {
        problems.push(`${name}: Litestream's restore failed: ${(err as Error).message}`);
      }
    }
  }
  // Every state of every replica (deleted tenants' too) is one database's.
  let pointsInTime = 0;
  const all = await replicaDirs(replicaRoot);
  for (const rel of all) {
    const check = await checkHistory(join(replicaRoot, rel), work);
    pointsInTime += check.pointsInTime;
    for (const problem of check.problems) problems.push(`${rel}: ${problem}`);
  }
  const allLogs = logs.join("");
  const count = (pattern: RegExp) => (allLogs.match(pattern) ?? []).length;
  const mb = (bytes: number) => (bytes / 1048576).toFixed(0);
  const summary = `${Object.entries(churn.counts).map(([op, n]) => `${n} ${op}`).join(", ")}; ` +
    `${stops} stops; ${churn.tenants.size} survivors, ${all.length} replicas, ` +
    `${pointsInTime} points in time restored${oracle ? ", Litestream checked" : ""}; ` +
    `RSS over the first half ${rss.map(mb).join(" → ")} MB`;
  notes.push(summary);
  // What the ERROR lines were about (their message, without the fields).
  const errors = new Map<string, number>();
  for (const line of allLogs.split("\n")) {
    const message = / ERROR (.*?)(?: \w+=|$)/.exec(line)?.[1];
    if (message) errors.set(message, (errors.get(message) ?? 0) + 1);
  }
  notes.push(
    `log: ${count(/behind its replica/g)} "behind its replica", ` +
      `${count(/cannot set aside/g)} "cannot set aside", ${count(/ ERROR /g)} ERROR lines` +
      [...errors].map(([message, n]) => `; ${n} × "${message}"`).join(""),
  );
  log(`[tenants] ${summary}`);
  if (problems.length > 0) {
    throw new Error(`${problems.length} problems:\n${problems.slice(0, 30).join("\n")}`);
  }
  return summary;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { seconds: { type: "string", default: "180" }, seed: { type: "string" } },
  });
  const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 1_000_000;
  const log = (message: string) =>
    console.error(`${new Date().toISOString().slice(11, 19)} ${message}`);
  log(`tenants: seed ${seed}`);
  const result = await tenantsCampaign({ durationMs: Number(values.seconds) * 1000, seed, log });
  console.log(JSON.stringify(result, null, 2));
  Deno.exit(result.ok ? 0 : 1);
}
