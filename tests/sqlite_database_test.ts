import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  InvalidDatabaseError,
  isSQLiteHeader,
  parseDatabaseHeader,
  pendingBytePage,
} from "../src/sqlite/mod.ts";

const fixture = (path: string) => fileURLToPath(new URL(`./fixtures/${path}`, import.meta.url));

Deno.test("parseDatabaseHeader: fixture databases", async () => {
  for (const name of ["enforce-retention", "write-snapshot-to"]) {
    const bytes = await Deno.readFile(fixture(`testdata/db/${name}/database`));
    assert.equal(bytes.length, 8192);
    assert.ok(isSQLiteHeader(bytes));
    const header = parseDatabaseHeader(bytes);
    assert.equal(header.pageSize, 4096);
    assert.equal(header.pageCount, 2);
  }
  const v1 = parseDatabaseHeader(await Deno.readFile(fixture("sqlite/v1.db")));
  assert.equal(v1.pageSize, 4096);
  assert.equal(v1.pageCount, 10);
});

Deno.test("parseDatabaseHeader: 64 KiB pages are stored as 1", async () => {
  const bytes = await Deno.readFile(fixture("sqlite/big.db"));
  assert.equal(new DataView(bytes.buffer).getUint16(16), 1);
  const header = parseDatabaseHeader(bytes.subarray(0, 100));
  assert.equal(header.pageSize, 65536);
  assert.equal(header.pageCount, bytes.length / 65536);
  assert.equal(header.writeVersion, 2);
  assert.equal(header.readVersion, 2);
});

Deno.test("parseDatabaseHeader: malformed files name the path", async () => {
  const cases = [
    ["open-invalid-database-header", 100, /not a SQLite database/],
    ["open-short-database", 10, /too short/],
    ["open-name-only", 0, /too short/],
  ] as const;
  for (const [name, size, message] of cases) {
    const path = fixture(`testdata/store/${name}/dbs/test.db/database`);
    const bytes = await Deno.readFile(path);
    assert.equal(bytes.length, size);
    assert.equal(isSQLiteHeader(bytes), false);
    assert.throws(
      () => parseDatabaseHeader(bytes, path),
      (err) =>
        err instanceof InvalidDatabaseError && err.message.startsWith(path) &&
        message.test(err.message),
    );
  }
});

Deno.test("parseDatabaseHeader: invalid page size", async () => {
  const bytes = (await Deno.readFile(fixture("sqlite/v1.db"))).slice(0, 100);
  for (const stored of [0, 256, 3000, 2]) {
    new DataView(bytes.buffer).setUint16(16, stored);
    assert.throws(() => parseDatabaseHeader(bytes, "x.db"), /x\.db: invalid page size/);
  }
});

Deno.test("pendingBytePage: the page holding byte 2^30", () => {
  assert.equal(pendingBytePage(512), 2097153);
  assert.equal(pendingBytePage(4096), 262145);
  assert.equal(pendingBytePage(65536), 16385);
});
