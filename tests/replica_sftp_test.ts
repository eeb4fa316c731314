/**
 * The replica-client conformance table (tests/_conformance.ts) run against SFTPReplicaClient on
 * Debian's OpenSSH server (tests/_sshd.ts), plus what is specific to SFTP: password and key
 * authentication, host-key checking (unknown and changed keys refused, known_hosts), reconnects
 * after the server drops every connection, temp-file cleanup, the LTX header time, and a real
 * `sluice replicate` → `sluice restore` through the server.
 */

import { encodeHeader, HEADER_FLAG_NO_CHECKSUM } from "../src/ltx/mod.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { DatabaseSync } from "node:sqlite";
import { createHash } from "node:crypto";
import {
  type LTXFileId,
  type ReplicaClient,
  ReplicaError,
  SFTPReplicaClient,
  type SFTPSpec,
} from "../src/replica/mod.ts";
import {
  type Backend,
  id,
  list,
  pattern,
  readAll,
  runBehaviours,
  streamOf,
} from "./_conformance.ts";
import { sshdUnavailable, type SshServer, startSshd } from "./_sshd.ts";
import { createDatabase, digest, runWriter, sluice, startReplicate, waitFor } from "./_sluice.ts";

const unavailable = sshdUnavailable();

function spec(server: SshServer, path: string, extra: Partial<SFTPSpec> = {}): SFTPSpec {
  return {
    host: `${server.host}:${server.port}`,
    user: server.user,
    keyPath: server.userKeyPath,
    hostKey: server.hostKeyLine,
    path,
    retryDelayMs: 20,
    ...extra,
  };
}

async function uidOf(user: string): Promise<{ uid: number; gid: number }> {
  const out = async (flag: string) =>
    Number(
      new TextDecoder().decode(
        (await new Deno.Command("id", { args: [flag, user], stdout: "piped" }).output()).stdout,
      ).trim(),
    );
  return { uid: await out("-u"), gid: await out("-g") };
}

/** Raw access: the server is local, so its directory is read and written directly. */
async function sftpBackend(server: SshServer): Promise<Backend> {
  const owner = await uidOf(server.user);
  let counter = 0;
  const sftp = (client: ReplicaClient) => client as SFTPReplicaClient;
  /** mkdir -p owned by the SFTP user, so the client can write where the test planted. */
  const makeDirs = async (dir: string) => {
    const missing: string[] = [];
    for (let d = dir; d.startsWith(server.dataDir) && d !== server.dataDir; d = join(d, "..")) {
      try {
        await Deno.stat(d);
        break;
      } catch {
        missing.unshift(d);
      }
    }
    for (const d of missing) {
      try {
        await Deno.mkdir(d);
      } catch (err) {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err; // a concurrent plant
      }
      await Deno.chown(d, owner.uid, owner.gid);
    }
  };
  const walk = async (dir: string, prefix = ""): Promise<string[]> => {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (entry.isDirectory) {
          names.push(...await walk(join(dir, entry.name), `${prefix}${entry.name}/`));
        } else names.push(prefix + entry.name);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return names.sort();
  };
  return {
    kind: "sftp",
    timestampResolutionMs: 1000,
    newClient: () =>
      new SFTPReplicaClient(spec(server, join(server.dataDir, `replica-${++counter}`))),
    async plant(client, level, name, bytes) {
      const path = join(sftp(client).levelDir(level), name);
      await makeDirs(join(path, ".."));
      await Deno.writeFile(path, bytes);
      await Deno.chown(path, owner.uid, owner.gid);
    },
    rawNames: (client, level) => walk(sftp(client).levelDir(level)),
    async plantOutside(client, name) {
      await makeDirs(sftp(client).path);
      await Deno.writeTextFile(join(sftp(client).path, name), "keep");
    },
    async outsideExists(client, name) {
      return (await Deno.stat(join(sftp(client).path, name))).isFile;
    },
    async rawTimestamp(client, file: LTXFileId) {
      const stat = await Deno.stat(sftp(client).filePath(file));
      return { mtime: stat.mtime?.getTime(), atime: stat.atime?.getTime() };
    },
    pendingUploads: () => Promise.resolve(0),
  };
}

/** An LTX header (the first 40 bytes are what the client reads) with this file's TXIDs. */
/** A valid LTX header (all a header-time read looks at) for `file`, stamped `timestamp`. */
function ltxHead(file: LTXFileId, timestamp: number): Uint8Array {
  return encodeHeader({
    flags: HEADER_FLAG_NO_CHECKSUM,
    pageSize: 4096,
    commit: 1,
    minTXID: file.minTXID,
    maxTXID: file.maxTXID,
    timestamp,
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  });
}

function fingerprintOf(line: string): string {
  const blob = Buffer.from(line.split(/\s+/)[1], "base64");
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

Deno.test({
  name: "replica client behaviours: sftp (OpenSSH)",
  ignore: unavailable !== undefined,
  sanitizeResources: false, // ssh2's socket closes after the test's last await
  sanitizeOps: false,
  async fn(t) {
    const server = await startSshd();
    try {
      const backend = await sftpBackend(server);
      await runBehaviours(t, backend);

      await t.step("password and key authentication; wrong credentials are refused", async () => {
        const base = join(server.dataDir, "auth");
        const byPassword = new SFTPReplicaClient(
          spec(server, base, { keyPath: undefined, password: server.password }),
        );
        await byPassword.writeLTXFile(id(0, 1), pattern(100), 0);
        await byPassword.close();
        const byKey = new SFTPReplicaClient(spec(server, base));
        assert.deepEqual(await readAll(await byKey.openLTXFile(id(0, 1))), pattern(100));
        await byKey.close();
        const wrong = new SFTPReplicaClient(
          spec(server, base, { keyPath: undefined, password: "not-the-password" }),
        );
        const error = await list(wrong, 0).then(() => undefined, (err) => err);
        assert.ok(error instanceof ReplicaError, String(error));
        assert.match(error.message, /authentication as sluice-sftp failed \(tried password\)/);
        assert.ok(!error.message.includes("not-the-password"));
        await wrong.close();
      });

      await t.step(
        "an unknown or changed host key is refused, naming the fingerprint",
        async () => {
          const home = await Deno.makeTempDir();
          const fingerprint = fingerprintOf(server.hostKeyLine);
          try {
            // No host-key, known-hosts pointing at an empty file: refused, with the line to add.
            const empty = join(home, "known_hosts");
            await Deno.writeTextFile(empty, "");
            const unknown = new SFTPReplicaClient(
              spec(server, server.dataDir, { hostKey: undefined, knownHosts: empty }),
            );
            const error = await list(unknown, 0).then(() => undefined, (err) => err);
            assert.ok(error instanceof ReplicaError, String(error));
            assert.ok(!error.message.includes("\n"));
            assert.match(error.message, /unknown host key for \[127\.0\.0\.1\]:\d+/);
            assert.ok(error.message.includes(fingerprint), error.message);
            assert.ok(error.message.includes(`host-key: "${server.hostKeyLine}"`), error.message);
            await unknown.close();

            // Another key configured: a mismatch, refused.
            const other = join(home, "other");
            await new Deno.Command("ssh-keygen", {
              args: ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", other],
            }).output();
            const otherLine = (await Deno.readTextFile(`${other}.pub`)).trim();
            const changed = new SFTPReplicaClient(
              spec(server, server.dataDir, { hostKey: otherLine }),
            );
            const mismatch = await list(changed, 0).then(() => undefined, (err) => err);
            assert.match(String(mismatch), /host key mismatch/);
            await changed.close();

            // Accepted: the fingerprint, a known_hosts line, a hashed known_hosts line.
            const byFingerprint = new SFTPReplicaClient(
              spec(server, server.dataDir, { hostKey: fingerprint }),
            );
            await list(byFingerprint, 0);
            await byFingerprint.close();
            const known = join(home, "known_hosts_ok");
            await Deno.writeTextFile(
              known,
              `# comment\nother.example ${otherLine}\n[127.0.0.1]:${server.port} ${server.hostKeyLine}\n`,
            );
            const byKnownHosts = new SFTPReplicaClient(
              spec(server, server.dataDir, { hostKey: undefined, knownHosts: known }),
            );
            await list(byKnownHosts, 0);
            await byKnownHosts.close();
            const hashed = await new Deno.Command("ssh-keygen", {
              args: ["-H", "-f", known],
              stdout: "null",
              stderr: "null",
            }).output();
            assert.ok(hashed.success);
            assert.ok((await Deno.readTextFile(known)).includes("|1|"));
            const byHashed = new SFTPReplicaClient(
              spec(server, server.dataDir, { hostKey: undefined, knownHosts: known }),
            );
            await list(byHashed, 0);
            await byHashed.close();
          } finally {
            await Deno.remove(home, { recursive: true });
          }
        },
      );

      await t.step("one connection, reopened after the server dropped it", async () => {
        const client = new SFTPReplicaClient(spec(server, join(server.dataDir, "drop")));
        await client.writeLTXFile(id(0, 1), pattern(1000, 1), 1000);
        await client.writeLTXFile(id(0, 2), pattern(1000, 2), 2000);
        await server.restart(); // kills sshd and every session process
        // The next operations notice the dead connection and retry on a new one: a stream
        // write (its body not read yet when the dead connection fails), then a listing.
        await client.writeLTXFile(id(0, 3), streamOf(pattern(100_000, 3), 4096), 3000);
        assert.deepEqual((await list(client, 0)).map((f) => f.maxTXID), [1, 2, 3]);
        assert.deepEqual(await readAll(await client.openLTXFile(id(0, 3))), pattern(100_000, 3));
        await server.restart();
        assert.deepEqual((await list(client, 0)).map((f) => f.maxTXID), [1, 2, 3]);
        await client.close();
      });

      await t.step("temp files of a killed writer are removed, finished files kept", async () => {
        const client = new SFTPReplicaClient(spec(server, join(server.dataDir, "temps")));
        await client.writeLTXFile(id(1, 1, 2), pattern(10), 0);
        const dir = client.levelDir(1);
        const owner = await uidOf(server.user);
        for (
          const name of [
            "0000000000000003-0000000000000004.ltx.1234.1700000000000000000.tmp", // Litestream's
            "0000000000000003-0000000000000004.ltx.abcd1234.tmp", // sluice's
          ]
        ) {
          await Deno.writeTextFile(join(dir, name), "half");
          await Deno.chown(join(dir, name), owner.uid, owner.gid);
        }
        await client.removeTempFiles();
        const names = [...Deno.readDirSync(dir)].map((e) => e.name);
        assert.deepEqual(names, ["0000000000000001-0000000000000002.ltx"]);
        await client.close();
      });

      await t.step("useMetadata reads the exact milliseconds from the LTX header", async () => {
        const client = new SFTPReplicaClient(spec(server, join(server.dataDir, "header")));
        const ts = Date.UTC(2026, 10, 22, 14, 1, 21, 173);
        await client.writeLTXFile(id(0, 7), ltxHead(id(0, 7), ts), ts);
        assert.equal((await list(client, 0))[0].createdAt.getTime(), ts - 173);
        assert.equal((await list(client, 0, { useMetadata: true }))[0].createdAt.getTime(), ts);
        await client.close();
      });
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "sftp replica: replicate → restore byte-identical through sluice",
  ignore: unavailable !== undefined,
  async fn() {
    const server = await startSshd();
    const dir = await Deno.makeTempDir({ prefix: "sluice-sftp-e2e-" });
    try {
      const db = join(dir, "app.db");
      createDatabase(db);
      const config = join(dir, "sluice.yml");
      await Deno.writeTextFile(
        config,
        [
          "dbs:",
          `  - path: ${db}`,
          "    replica:",
          "      type: sftp",
          `      host: ${server.host}:${server.port}`,
          `      user: ${server.user}`,
          `      key-path: ${server.userKeyPath}`,
          `      host-key: ${server.hostKeyLine}`,
          `      path: ${join(server.dataDir, "app")}`,
          "      sync-interval: 100ms",
          "",
        ].join("\n"),
      );
      await runWriter("--db", db, "--count", "200", "--row-size", "3000");
      const replicator = startReplicate("-c", config);
      try {
        await waitFor("the first snapshot on the server", () => {
          try {
            return [...Deno.readDirSync(join(server.dataDir, "app", "ltx", "9"))].length > 0;
          } catch {
            return false;
          }
        }, 15_000);
        await runWriter("--db", db, "--count", "100", "--row-size", "500", "--seed", "2");
      } finally {
        const stopped = await replicator.stop();
        assert.equal(stopped.code, 0, stopped.stderr);
      }
      const out = join(dir, "restored.db");
      // From the URL alone: password in the userinfo, the host key's fingerprint as a query.
      const hostKey = encodeURIComponent(fingerprintOf(server.hostKeyLine));
      const url = `sftp://${server.user}:${server.password}@${server.host}:${server.port}` +
        `${server.dataDir}/app?host-key=${hostKey}`;
      const restored = await sluice("restore", "-o", out, url);
      assert.equal(restored.code, 0, restored.stderr);
      assert.deepEqual(await digest(out), await digest(db));
      // sluice has stopped: fold the WAL into the file, which is then the restored file's bytes.
      const source = new DatabaseSync(db);
      source.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      source.close();
      assert.deepEqual(await Deno.readFile(out), await Deno.readFile(db));
    } finally {
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
