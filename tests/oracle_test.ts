import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DatabaseSync } from "node:sqlite";
import { litestreamRestore, oracleAvailable, OracleError } from "./_oracle.ts";

const fixture = (path: string) => fileURLToPath(new URL(`./fixtures/${path}`, import.meta.url));

// The extension exists only for Linux x86-64; there it must be installed (deno.json imports).
const ignore = !(Deno.build.os === "linux" && Deno.build.arch === "x86_64");

/** Replica → the database Go restored it to (fixtures/README.md) and its last TXID. */
const EXPECTED: [replica: string, database: string, txid: number][] = [
  ["rep-block", "v2.db", 2],
  ["rep-frame", "v2.db", 2],
  ["rep-l1", "v3.db", 3],
  ["rep-big-block", "big.db", 1],
  ["rep-big-frame", "big.db", 1],
];

Deno.test({ name: "oracle: the Litestream extension is installed", ignore }, () => {
  assert.ok(
    oracleAvailable(),
    "litestream-vfs.so not found: run `deno install` or set SLUICE_LITESTREAM_VFS",
  );
});

Deno.test({ name: "oracle: Go-verified replicas restore byte-identical", ignore }, async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-oracle-" });
  try {
    for (const [replica, database, txid] of EXPECTED) {
      await t.step(`${replica} → ${database}`, async () => {
        const out = join(dir, `${replica}.db`);
        const result = await litestreamRestore(
          fixture(`node-written-go-verified/${replica}`),
          out,
          { query: "SELECT count(*) AS n FROM t" },
        );
        assert.deepEqual(
          await Deno.readFile(out),
          await Deno.readFile(fixture(`sqlite/${database}`)),
        );
        // The query ran through the VFS page index; the restored file must agree with it.
        const restored = new DatabaseSync(out, { readOnly: true });
        try {
          const rows = restored.prepare("SELECT count(*) AS n FROM t").all();
          assert.deepEqual(result.rows, rows.map((r) => ({ n: r.n })));
        } finally {
          restored.close();
        }
        assert.equal(result.txid, txid);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({ name: "oracle: Litestream rejects a checksummed replica", ignore }, async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-oracle-" });
  try {
    await assert.rejects(
      litestreamRestore(fixture("negative/rep-checksum"), join(dir, "out.db")),
      (err) =>
        err instanceof OracleError && err.exitCode === 1 &&
        /post-apply checksum not allowed/.test(err.log),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({ name: "oracle: a missing replica is a usage error", ignore }, async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-oracle-" });
  try {
    await assert.rejects(
      litestreamRestore(join(dir, "nothing-here"), join(dir, "out.db")),
      (err) => err instanceof OracleError && err.exitCode === 2,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({ name: "oracle: a corrupted LTX file fails the restore", ignore }, async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-oracle-" });
  try {
    const replica = join(dir, "replica");
    for (const level of ["0", "9"]) {
      const from = fixture(`node-written-go-verified/rep-block/ltx/${level}`);
      await Deno.mkdir(join(replica, "ltx", level), { recursive: true });
      for await (const entry of Deno.readDir(from)) {
        await Deno.copyFile(join(from, entry.name), join(replica, "ltx", level, entry.name));
      }
    }
    const target = join(replica, "ltx", "0", "0000000000000002-0000000000000002.ltx");
    const bytes = await Deno.readFile(target);
    bytes[bytes.length - 1] ^= 0x01; // the file checksum in the trailer
    await Deno.writeFile(target, bytes);
    await assert.rejects(
      litestreamRestore(replica, join(dir, "out.db")),
      (err) => err instanceof OracleError && err.exitCode === 1,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
