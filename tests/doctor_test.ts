/**
 * `sluice doctor` end to end: the real CLI against fauxqs (healthy, missing bucket) and against
 * directories (healthy, under a regular file, read-only mount), the `--json` shape, and proof
 * that existing replica files are untouched byte for byte.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { ROOT } from "./_sluice.ts";
import { canMount, mountReadOnly, unmount } from "./_mount.ts";
import { S3ReplicaClient } from "../src/replica/mod.ts";
import { formatReport, runDoctor } from "../src/doctor/mod.ts";
import { parseReplicaURL } from "../src/config/mod.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `sluice doctor <args>` with fauxqs's credentials in the environment. */
async function doctor(...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "doctor", ...args],
    env: {
      AWS_ACCESS_KEY_ID: FAUXQS_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: FAUXQS_CREDENTIALS.secretAccessKey,
      AWS_REGION: "us-east-1",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/**
 * The same check in this process (no CLI start-up), with fauxqs's credentials in the spec:
 * the exit status the CLI would give and its text output.
 */
async function doctorHere(url: string): Promise<Run> {
  const spec = parseReplicaURL(url);
  const withKeys = spec.type === "s3" ? { ...spec, ...FAUXQS_CREDENTIALS } : spec;
  const report = await runDoctor(withKeys);
  return { code: report.ok ? 0 : 1, stdout: formatReport(report), stderr: "" };
}

/** Every check line of a text report: `[status, name]`. */
function checkLines(stdout: string): Array<[string, string]> {
  return stdout.split("\n").filter((line) => /^ {2}(ok|warn|FAIL|skip) /.test(line)).map(
    (line) => {
      const [status, ...rest] = line.trim().split(/\s{2,}/);
      return [status, rest[0]];
    },
  );
}

/** Every file under `dir` with its bytes, keyed by relative path. */
async function snapshotTree(dir: string, prefix = ""): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for await (const entry of Deno.readDir(join(dir, prefix))) {
    const rel = join(prefix, entry.name);
    if (entry.isDirectory) {
      for (const [k, v] of await snapshotTree(dir, rel)) files.set(k, v);
    } else {
      files.set(rel, await Deno.readFile(join(dir, rel)));
    }
  }
  return files;
}

/**
 * An HTTP relay to fauxqs that answers 400 InvalidArgument to any request carrying an
 * `x-amz-checksum-*` header, as R2 and B2 did (Litestream #918, #947). fauxqs does not check
 * signatures, so forwarding with a new Host is fine.
 */
function startChecksumRejectingProxy(target: string): { url: string; close(): Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = req.body === null ? undefined : new Uint8Array(await req.arrayBuffer());
    if ([...req.headers.keys()].some((name) => name.startsWith("x-amz-checksum-"))) {
      const xml = "<Error><Code>InvalidArgument</Code><Message>checksum headers are not " +
        "supported</Message></Error>";
      return new Response(xml, { status: 400, headers: { "content-type": "application/xml" } });
    }
    const headers = new Headers(req.headers);
    for (const name of ["host", "content-length", "connection"]) headers.delete(name);
    const url = new URL(req.url);
    const answer = await fetch(`${target}${url.pathname}${url.search}`, {
      method: req.method,
      headers,
      body,
    });
    return new Response(answer.body, { status: answer.status, headers: answer.headers });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
  };
}

const LTX_FILES = [
  { level: 0, minTXID: 1, maxTXID: 1 },
  { level: 0, minTXID: 2, maxTXID: 5 },
  { level: 9, minTXID: 1, maxTXID: 5 },
];

function fileBytes(i: number): Uint8Array {
  return new Uint8Array(3000 + i * 100).map((_, j) => (i * 7 + j) % 251);
}

Deno.test("doctor: S3 (fauxqs)", async (t) => {
  const s3 = await startS3Server();
  const replica = new S3ReplicaClient(s3Spec(s3, "doctor-ok", "app/db"));
  try {
    await s3.createBucket("doctor-ok");
    for (const [i, file] of LTX_FILES.entries()) {
      await replica.writeLTXFile(file, fileBytes(i), Date.UTC(2026, 0, 1, 0, 0, i));
    }
    const url = `s3://doctor-ok/app/db?endpoint=${s3.endpoint}`;
    // The CLI runs are independent: start them together (each pays the SDK's start-up).
    const strict = startChecksumRejectingProxy(s3.endpoint);
    const strictURL = `s3://doctor-ok/strict?endpoint=${strict.url}`;
    const runs = Promise.all([
      doctor(url),
      doctor("--json", url),
      doctor(`s3://no-such-bucket/db?endpoint=${s3.endpoint}`),
      doctorHere(`${strictURL}&provider=aws`),
      doctorHere(strictURL),
    ]);
    const [text, json, missing, wrongProfile, rightProfile] = await runs.finally(() =>
      strict.close()
    );

    await t.step(
      "healthy: exit 0, every line ok, --json shape, replica files untouched",
      async () => {
        assert.equal(text.code, 0, text.stdout + text.stderr);
        const lines = checkLines(text.stdout);
        const names = lines.map(([, name]) => name);
        for (
          const name of [
            "profile",
            "credentials",
            "bucket",
            "put",
            "get",
            "ranged get",
            "list",
            "conditional write",
            "checksum headers",
            "multipart",
            "delete",
            "clock",
          ]
        ) assert.ok(names.includes(name), `no "${name}" line in:\n${text.stdout}`);
        // fauxqs ignores If-None-Match: the only line that may warn; nothing fails or is skipped.
        for (const [status, name] of lines) {
          if (name === "conditional write") assert.ok(status === "ok" || status === "warn");
          else assert.equal(status, "ok", `${name}: ${text.stdout}`);
        }
        assert.match(text.stdout, /credentials\s+from the environment \(AWS_ACCESS_KEY_ID/);

        assert.equal(json.code, 0, json.stderr);
        const parsed = JSON.parse(json.stdout);
        assert.equal(parsed.ok, true);
        assert.equal(parsed.replicas.length, 1);
        const [report] = parsed.replicas;
        assert.equal(report.type, "s3");
        assert.equal(report.ok, true);
        assert.match(report.location, /^s3:\/\/doctor-ok\/app\/db/);
        for (const check of report.checks) {
          assert.equal(typeof check.name, "string");
          assert.ok(["ok", "warn", "fail", "skip"].includes(check.status));
          assert.equal(typeof check.required, "boolean");
          assert.equal(typeof check.detail, "string");
          assert.ok(check.status !== "fail");
        }

        // Existing files byte-identical; nothing else left under the prefix.
        const { client, sdk } = await replica.sdkClient();
        const listed = await client.send(
          new sdk.ListObjectsV2Command({ Bucket: "doctor-ok", Prefix: "app/" }),
        );
        const keys = (listed.Contents ?? []).map((o) => o.Key).sort();
        assert.deepEqual(keys, LTX_FILES.map((f) => replica.objectKey(f)).sort());
        for (const [i, file] of LTX_FILES.entries()) {
          const stream = await replica.openLTXFile(file);
          const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
          assert.deepEqual(bytes, fileBytes(i));
        }
      },
    );

    await t.step("missing bucket: exit 1, the line names the fix", () => {
      const run = missing;
      assert.equal(run.code, 1, run.stdout + run.stderr);
      const bucket = run.stdout.split("\n").find((line) => /^ {2}FAIL\s+bucket/.test(line));
      assert.ok(bucket, run.stdout);
      assert.match(bucket, /"no-such-bucket" does not exist/);
      assert.match(bucket, /fix: create it \(sluice never creates buckets\)/);
      // Later checks are skipped, not run against a missing bucket.
      const lines = checkLines(run.stdout);
      assert.ok(lines.some(([status, name]) => status === "skip" && name === "put"));
    });

    await t.step("checksum headers rejected: doctor suggests the profile that fits", () => {
      // The aws profile checksums every upload: the probe's put fails, naming the fix.
      assert.equal(wrongProfile.code, 1, wrongProfile.stdout + wrongProfile.stderr);
      const put = wrongProfile.stdout.split("\n").find((line) => /^ {2}FAIL\s+put/.test(line));
      assert.ok(put, wrongProfile.stdout);
      assert.match(put, /InvalidArgument/);
      assert.match(put, /fix: .*provider: generic or checksum-mode: when-required/);
      // The generic profile sends checksums only where required: usable, the rejection noted.
      assert.equal(rightProfile.code, 0, rightProfile.stdout + rightProfile.stderr);
      const line = rightProfile.stdout.split("\n").find((l) => /checksum headers/.test(l));
      assert.match(line ?? "", /^ {2}ok\s+checksum headers\s+x-amz-checksum-crc32 rejected/);
    });
  } finally {
    await replica.close();
    await s3.stop();
  }
});

Deno.test("doctor: a healthy directory passes and its replica files stay byte-identical", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-doctor-" });
  try {
    const replica = join(dir, "replica");
    for (const [i, file] of LTX_FILES.entries()) {
      const level = join(replica, file.level.toString(16).padStart(4, "0"));
      await Deno.mkdir(level, { recursive: true });
      await Deno.writeFile(join(level, `${i}.ltx`), fileBytes(i));
    }
    const before = await snapshotTree(replica);
    const fresh = join(dir, "not", "yet");
    const [run, created] = await Promise.all([doctor(`file://${replica}`), doctorHere(fresh)]);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const lines = checkLines(run.stdout);
    for (const [status, name] of lines) assert.equal(status, "ok", `${name}: ${run.stdout}`);
    assert.deepEqual(
      lines.map(([, name]) => name),
      ["directory", "put", "get", "ranged get", "list", "fsync", "rename", "delete", "free space"],
    );
    assert.deepEqual(await snapshotTree(replica), before);

    // A replica directory that does not exist yet: created for the probe, removed after.
    assert.equal(created.code, 0, created.stdout);
    assert.equal(await Deno.stat(join(dir, "not")).then(() => true, () => false), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor: a directory path under a regular file fails with the fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-doctor-" });
  try {
    await Deno.writeTextFile(join(dir, "plain-file"), "not a directory");
    const run = await doctor("--json", join(dir, "plain-file", "replica"));
    assert.equal(run.code, 1, run.stdout + run.stderr);
    const [report] = JSON.parse(run.stdout).replicas;
    assert.equal(report.ok, false);
    const directory = report.checks.find((c: { name: string }) => c.name === "directory");
    assert.equal(directory.status, "fail");
    assert.match(directory.detail, /plain-file is a file/);
    assert.match(directory.fix, /not under the file/);
    assert.equal(await Deno.readTextFile(join(dir, "plain-file")), "not a directory");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "doctor: a read-only directory fails the put with the fix",
  ignore: !(await canMount()),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sluice-doctor-ro-" });
    await mountReadOnly(dir);
    try {
      const run = await doctorHere(dir);
      assert.equal(run.code, 1, run.stdout + run.stderr);
      const put = run.stdout.split("\n").find((line) => /^ {2}FAIL\s+put/.test(line));
      assert.ok(put, run.stdout);
      assert.match(put, /read-only/i);
    } finally {
      await unmount(dir);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
