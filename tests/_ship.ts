/**
 * For the tests that drive a `DB` themselves: its files shipped to a directory replica as
 * `replicate` would, then restored with the CLI and compared. Apart from `_sluice.ts`, which
 * most test files import and which must not load the engine and every storage client for them.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Replica } from "../src/engine/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { digest, restoreTo } from "./_sluice.ts";

/**
 * For a test that drives a `DB` itself: ships its local files up to `txid` from `metaDir` to the
 * directory replica `replicaDir` (as `replicate` would), restores that with the CLI into
 * `<dir>/restored.db`, and asserts it equals `dbPath` (content, integrity, transactions 1..m with
 * none missing). @returns the restored file's path, for further checks.
 */
export async function shipAndCheckRestore(
  options: { metaDir: string; replicaDir: string; txid: number; dbPath: string; dir: string },
): Promise<string> {
  const { metaDir, replicaDir, txid, dbPath, dir } = options;
  const replica = new Replica(
    new FileReplicaClient(replicaDir),
    FileReplicaClient.metaDirectory(metaDir),
  );
  await replica.upload(txid);
  const source = await digest(dbPath);
  const out = join(dir, "restored.db");
  await restoreTo(replicaDir, out);
  const restored = await digest(out);
  assert.equal(restored.integrity, "ok");
  assert.deepEqual(restored, source);
  assert.equal(source.distinctN, source.maxN, "transactions 1..m, none missing");
  return out;
}
