/**
 * What age encryption of a replica costs (issue 19): a full snapshot (the replication of a whole
 * database image: sync to an L0 file, upload, promotion to level 9) and a restore, each with
 * `age:` and without, side by side in the same run, on a directory replica; plus the cost of a
 * ranged read at the end of an encrypted file (the decorator decrypts from the start).
 *
 *   deno run -A scripts/bench/age.ts [--quick]   # 256 MiB; --quick: 64 MiB
 *
 * The database is scripts/bench/snapshot_restore.ts's (random, incompressible blobs), so the
 * cipher sees every byte of the database once. Figures are MB of database per second of a fresh
 * `deno run` process (start-up included), warm cache, best of 2 (1 with --quick).
 *
 * @module
 */

import { join } from "node:path";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { type BenchOptions, type BenchResult, progress, result, sluiceCommand } from "./_common.ts";
import { buildDatabase, measure, type Measured, warm } from "./snapshot_restore.ts";
import { createReplicaClient, SNAPSHOT_LEVEL } from "../../src/replica/mod.ts";

const MIB = 1 << 20;

/** Runs the benchmark; returns the snapshot, restore and ranged-read rows. */
export async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const targetBytes = (opts.quick ? 64 : 256) * MIB;
  const repeats = opts.quick ? 1 : 2;
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-age-" });
  const sluice = sluiceCommand;
  try {
    const dbPath = join(dir, "big.db");
    progress(`age: building a ${targetBytes / MIB} MiB database`);
    const size = buildDatabase(dbPath, targetBytes);
    await warm(dbPath);
    const identity = await generateIdentity();
    const idFile = join(dir, "id.txt");
    await Deno.writeTextFile(idFile, `${identity}\n`);
    const recipient = await identityToRecipient(identity);

    const snapshots = { age: [] as Measured[], plain: [] as Measured[] };
    const restores = { age: [] as Measured[], plain: [] as Measured[] };
    for (let i = 0; i < repeats; i++) {
      for (const mode of ["plain", "age"] as const) {
        const replica = join(dir, `replica-${mode}-${i}`);
        const url = `file://${replica}`;
        // Each run starts from scratch: no meta directory, an empty replica.
        await Deno.remove(join(dir, ".big.db-sluice"), { recursive: true }).catch(() => {});
        if (mode === "age") {
          const config = join(dir, `age-${i}.yml`);
          await Deno.writeTextFile(
            config,
            [
              "dbs:",
              `  - path: ${dbPath}`,
              "    replica:",
              `      url: ${url}`,
              "      age:",
              `        recipients: [${recipient}]`,
              `        identity-files: [${idFile}]`,
              "",
            ].join("\n"),
          );
          snapshots.age.push(await measure(sluice("snapshot", "-c", config)));
        } else {
          snapshots.plain.push(await measure(sluice("snapshot", dbPath, url)));
        }
        const out = join(dir, `restored-${mode}-${i}.db`);
        const identityArgs = mode === "age" ? ["--age-identity", idFile] : [];
        restores[mode].push(
          await measure(
            sluice("restore", ...identityArgs, "--integrity-check", "none", "-o", out, url),
          ),
        );
        await Deno.remove(out);
        progress(
          `age: run ${i + 1} ${mode}: snapshot ${snapshots[mode][i].seconds.toFixed(2)} s, ` +
            `restore ${restores[mode][i].seconds.toFixed(2)} s`,
        );
      }
    }

    // A ranged read at the end of the encrypted snapshot: everything before it is decrypted.
    const replica = join(dir, "replica-age-0");
    const reader = createReplicaClient({
      type: "file",
      path: replica,
      age: { recipients: [], identities: [identity] },
    });
    const [snapshot] = await Array.fromAsync(reader.ltxFiles(SNAPSHOT_LEVEL));
    const started = performance.now();
    const tail = await new Response(
      await reader.openLTXFile(snapshot, { offset: size / 2, length: 4096 }),
    ).arrayBuffer();
    const rangedSeconds = (performance.now() - started) / 1000;
    const headStarted = performance.now();
    await new Response(await reader.openLTXFile(snapshot, { length: 100 })).arrayBuffer();
    const headSeconds = (performance.now() - headStarted) / 1000;
    await reader.close();
    if (tail.byteLength !== 4096) throw new Error("ranged read came back short");

    const rate = (runs: Measured[]) => size / 1e6 / Math.min(...runs.map((r) => r.seconds));
    const label = `${Math.round(size / MIB)} MiB`;
    const common = `best of ${repeats}, warm cache, process start-up included, MB of database, ` +
      `random (incompressible) pages, directory replica`;
    return [
      result(
        `snapshot ${label} with age`,
        "MB/s",
        rate(snapshots.age),
        rate(snapshots.plain),
        "sluice snapshot without age",
        `${common}; sync + upload + promotion to level 9: the image is encrypted twice (L0 and L9)`,
      ),
      result(
        `restore ${label} with age`,
        "MB/s",
        rate(restores.age),
        rate(restores.plain),
        "sluice restore without age",
        `${common}; integrity-check none; every byte decrypted once`,
      ),
      result(
        `ranged read 4 KiB at ${Math.round(size / 2 / MIB)} MiB of an age file`,
        "ms",
        rangedSeconds * 1000,
        headSeconds * 1000,
        "the first 100 bytes (a header read)",
        "in process; a range is cut from the decrypted stream, so the bytes before it are decrypted",
      ),
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const results = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(results, null, 2));
}
