/**
 * Replica object names that would escape the output path are never followed on restore.
 *
 * Restore only ever reads files whose names parse as strict `<16 hex>-<16 hex>.ltx` inside a
 * level (src/replica/_names.ts); the path it opens is rebuilt from the parsed TXIDs, and it
 * writes nothing but `<out>.tmp` and `<out>`. Hostile names (`..`, absolute paths, nested
 * directories, symlinks, look-alikes) planted beside a valid replica must be ignored: the
 * restore equals the expected database, and nothing appears outside the output path.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { sluice } from "./_sluice.ts";
import { S3ReplicaClient } from "../src/replica/mod.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const REPLICA = fileURLToPath(new URL("node-written-go-verified/rep-block/", fixtures));
const EXPECTED = new URL("sqlite/v2.db", fixtures);

/** Every file under `dir`, relative, sorted. */
async function tree(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(join(dir, rel))) {
    const path = join(rel, entry.name);
    if (entry.isDirectory) out.push(...await tree(dir, path));
    else out.push(path);
  }
  return out.sort();
}

async function copyReplica(to: string): Promise<void> {
  for (const rel of await tree(REPLICA)) {
    await Deno.mkdir(dirname(join(to, rel)), { recursive: true });
    await Deno.copyFile(join(REPLICA, rel), join(to, rel));
  }
}

Deno.test("restore paths: hostile names in a file replica are ignored, nothing escapes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-paths-" });
  try {
    const replica = join(dir, "replica");
    await copyReplica(replica);
    const outside = join(dir, "outside");
    await Deno.mkdir(outside);
    // A newer "file" that is a symlink to a file outside the replica (a valid LTX file, so a
    // restore that followed it would change the result) …
    const newer = await Deno.readFile(join(REPLICA, "ltx/0/0000000000000002-0000000000000002.ltx"));
    await Deno.writeFile(join(outside, "target.ltx"), newer);
    await Deno.symlink(
      join(outside, "target.ltx"),
      join(replica, "ltx/0/0000000000000003-0000000000000003.ltx"),
    );
    // … a directory named like a file, a symlinked level directory, and look-alike names.
    await Deno.mkdir(join(replica, "ltx/0/0000000000000004-0000000000000004.ltx"));
    await Deno.symlink(outside, join(replica, "ltx/1"));
    for (const name of ["0000000000000005-0000000000000005.LTX", "..ltx", "x-y.ltx"]) {
      await Deno.writeFile(join(replica, "ltx/0", name), newer);
    }
    const before = await tree(dir);

    const out = join(dir, "out", "restored.db");
    await Deno.mkdir(dirname(out));
    const result = await sluice("restore", "-o", out, `file://${replica}`);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await Deno.readFile(out), await Deno.readFile(EXPECTED));
    // The only new file is the output.
    const after = await tree(dir);
    assert.deepEqual(after.filter((p) => !before.includes(p)), ["out/restored.db"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore paths: S3 keys with .., absolute paths and subdirectories are ignored", async () => {
  const server = await startS3Server({ buckets: ["paths"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-paths-" });
  const raw = new S3Client({
    endpoint: server.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: FAUXQS_CREDENTIALS,
  });
  const client = new S3ReplicaClient(s3Spec(server, "paths", "app"));
  try {
    // The valid replica, uploaded file by file.
    for (const rel of await tree(REPLICA)) {
      const [, level, name] = rel.split("/");
      const m = /^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$/.exec(name)!;
      await client.writeLTXFile(
        { level: Number(level), minTXID: parseInt(m[1], 16), maxTXID: parseInt(m[2], 16) },
        await Deno.readFile(join(REPLICA, rel)),
        Date.UTC(2026, 0, 1),
      );
    }
    const newer = await Deno.readFile(join(REPLICA, "ltx/0/0000000000000002-0000000000000002.ltx"));
    const hostile = [
      "app/0000/../../../escaped/0000000000000003-0000000000000003.ltx",
      "app/0000/../0000000000000003-0000000000000003.ltx",
      "app/0000//abs/0000000000000003-0000000000000003.ltx",
      `app/0000/${dir}/0000000000000003-0000000000000003.ltx`,
      "app/0000/sub/0000000000000003-0000000000000003.ltx",
      "app/0000/0000000000000003-0000000000000003.ltx/x",
      "/app/0000/0000000000000003-0000000000000003.ltx",
      "app/0001/../0000/0000000000000003-0000000000000003.ltx",
    ];
    for (const key of hostile) {
      await raw.send(new PutObjectCommand({ Bucket: "paths", Key: key, Body: newer }));
    }
    const listed = [];
    for await (const f of client.ltxFiles(0)) listed.push(f.maxTXID);
    assert.deepEqual(listed, [1, 2], "only the two real L0 files are listed");

    const out = join(dir, "restored.db");
    const url = `s3://paths/app?endpoint=${encodeURIComponent(server.endpoint)}` +
      `&region=us-east-1&force-path-style=true`;
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "restore", "-o", out, url],
      env: {
        AWS_ACCESS_KEY_ID: FAUXQS_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: FAUXQS_CREDENTIALS.secretAccessKey,
        AWS_EC2_METADATA_DISABLED: "true",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
    assert.deepEqual(await Deno.readFile(out), await Deno.readFile(EXPECTED));
    assert.deepEqual(await tree(dir), ["restored.db"], "nothing but the output was written");
  } finally {
    raw.destroy();
    await client.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
