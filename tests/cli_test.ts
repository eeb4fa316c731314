import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  COMMANDS,
  formatCommandHelp,
  parseDatabasesArgs,
  parseLTXArgs,
  parseReplicateArgs,
  parseRestoreArgs,
  PARSERS,
  parseSnapshotArgs,
  parseStatusArgs,
  parseTimestampArg,
  parseTXIDArg,
  UsageError,
} from "../src/cli/args.ts";
import { createLogger, type LogFields, redact } from "../src/log/mod.ts";
import denoJson from "../deno.json" with { type: "json" };

const ROOT = new URL("..", import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run -A main.ts …args` from the project root. */
async function sluice(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "main.ts", ...args],
    cwd: ROOT,
    env: { SLUICE_CONFIG: "/nonexistent/sluice.yml", NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Asserts a usage/config failure: exit 2 and exactly one line on stderr matching `pattern`. */
function assertOneLineError(result: Result, code: number, pattern: RegExp): void {
  assert.equal(result.code, code, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0], pattern);
}

Deno.test("sluice version prints the version of deno.json", async () => {
  const result = await sluice(["version"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stdout,
    new RegExp(`^sluice ${denoJson.version.replaceAll(".", "\\.")} \\(deno \\d`),
  );
  assert.equal((await sluice(["--version"])).stdout, result.stdout);
  assertOneLineError(
    await sluice(["version", "extra"]),
    2,
    /^sluice version: unexpected argument "extra"/,
  );
});

Deno.test("help: global, per command, and usage on stderr without a command", async () => {
  const global = await sluice(["--help"]);
  assert.equal(global.code, 0);
  for (
    const command of ["replicate", "restore", "snapshot", "databases", "ltx", "status", "version"]
  ) {
    assert.match(global.stdout, new RegExp(`^  ${command} `, "m"));
  }
  const restore = await sluice(["restore", "--help"]);
  assert.equal(restore.code, 0);
  assert.match(
    restore.stdout,
    /^Usage: sluice restore \[-c FILE\] \[-o OUT\] \[--txid HEX16 \| --timestamp RFC3339\]/,
  );
  assert.match(restore.stdout, /--integrity-check none\|quick\|full/);
  // Help wins over otherwise invalid arguments.
  assert.equal((await sluice(["restore", "-h", "--txid", "bad"])).code, 0);
  assert.equal((await sluice(["help", "ltx"])).stdout, (await sluice(["ltx", "--help"])).stdout);
  const none = await sluice([]);
  assert.equal(none.code, 2);
  assert.equal(none.stdout, "");
  assert.match(none.stderr, /Usage: sluice <command>/);
});

Deno.test("help: every command shows at least one example, and each example parses", () => {
  for (const command of COMMANDS) {
    assert.ok(command.examples.length > 0, `${command.name} has an example`);
    const help = formatCommandHelp(command.name);
    for (const example of command.examples) {
      assert.ok(help.includes(`  sluice ${example}`), `${command.name} help shows "${example}"`);
      const [name, ...args] = example.split(" ");
      assert.equal(name, command.name);
      PARSERS[command.name](args); // throws UsageError on an example that is not valid
    }
  }
});

Deno.test("unknown command or option: exit 2, one line naming it", async () => {
  assertOneLineError(
    await sluice(["replikate"]),
    2,
    /^sluice: unknown command "replikate"; commands: replicate, restore, snapshot, databases, ltx, verify, (?:doctor, )?status, version/,
  );
  assertOneLineError(await sluice(["--frob"]), 2, /^sluice: unknown option --frob; commands: /);
  assertOneLineError(
    await sluice(["databases", "--bogus"]),
    2,
    /^sluice databases: unknown option --bogus; see "sluice databases --help"$/,
  );
});

Deno.test("bad flags: exit 2 with one line, before any work", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["restore", "--txid", "12", "/x.db"],
      /^sluice restore: --txid must be exactly 16 hex digits .*got "12"$/,
    ],
    [["restore", "--txid", "000000000000000g", "/x.db"], /--txid must be exactly 16 hex digits/],
    [
      ["restore", "--timestamp", "yesterday", "/x.db"],
      /^sluice restore: --timestamp must be an RFC 3339 time/,
    ],
    [
      ["restore", "--txid", "0000000000000001", "--timestamp", "2026-01-01T00:00:00Z", "/x.db"],
      /^sluice restore: give --txid or --timestamp, not both$/,
    ],
    [["restore", "s3://bk/db"], /^sluice restore: restoring from a REPLICA_URL needs -o OUT/],
    [["restore"], /^sluice restore: missing DB_PATH or REPLICA_URL$/],
    [
      ["restore", "a", "b"],
      /^sluice restore: unexpected argument "b"; expected DB_PATH or REPLICA_URL$/,
    ],
    [
      ["restore", "--integrity-check", "deep", "/x.db"],
      /--integrity-check must be none, quick or full, got "deep"/,
    ],
    [["restore", "-o"], /^sluice restore: -o\/--output needs a value$/],
    [
      ["restore", "-o", "--json", "/x.db"],
      /^sluice restore: -o needs a value \(to pass a value starting with "-"/,
    ],
    [["restore", "--json=yes", "/x.db"], /^sluice restore: --json takes no value$/],
    [
      ["restore", "-o", "a", "-o", "b", "/x.db"],
      /^sluice restore: --output is given more than once$/,
    ],
    [
      ["ltx", "--level", "10", "/x.db"],
      /^sluice ltx: --level must be a level 0-9 or "all", got "10"$/,
    ],
    [
      ["replicate", "/x.db"],
      /^sluice replicate: missing DB_PATH REPLICA_URL \(both, or neither\)$/,
    ],
    [
      ["replicate", "-c", "a.yml", "/x.db", "s3://b/p"],
      /^sluice replicate: give either -c FILE or DB_PATH REPLICA_URL, not both$/,
    ],
    [["replicate", "s3://b/p", "/x.db"], /^sluice replicate: DB_PATH comes first/],
    [["snapshot", "a", "b", "c"], /^sluice snapshot: unexpected argument "c"/],
    [
      ["databases", "extra"],
      /^sluice databases: unexpected argument "extra"; expected no arguments$/,
    ],
    [["status", "--config="], /^sluice status: --config needs a non-empty value$/],
  ];
  for (const [args, pattern] of cases) assertOneLineError(await sluice(args), 2, pattern);
});

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("config errors: exit 2, one line with file:line", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      path,
      "dbs:\n  - path: /data/app.db\n    replica:\n      url: s3://bk/app\n      secret-acces-key: hunter2\n",
    );
    const result = await sluice(["databases", "-c", path]);
    assertOneLineError(
      result,
      2,
      new RegExp(
        `^sluice: ${path}:5: unknown key "secret-acces-key" in dbs\\[0\\]\\.replica \\(did you mean "secret-access-key"\\?\\)$`,
      ),
    );
    assert.ok(!result.stderr.includes("hunter2"));

    await Deno.writeTextFile(
      path,
      'dbs:\n  - path: /data/app.db\n    replica: { url: "${URL}" }\n',
    );
    assertOneLineError(
      await sluice(["databases", "-c", path], { URL: "nats://bk/app" }),
      2,
      new RegExp(
        `^sluice: ${path}:3: dbs\\[0\\]\\.replica\\.url: replica URL "nats://bk/app": nats replicas are not supported`,
      ),
    );
    assertOneLineError(
      await sluice(["databases", "-c", join(dir, "missing.yml")]),
      2,
      /^sluice: .*missing\.yml does not exist$/,
    );
    assertOneLineError(
      await sluice(["databases"]),
      2,
      /^sluice databases: no config: -c FILE not given and the default config file \/nonexistent\/sluice\.yml does not exist$/,
    );
    assertOneLineError(
      await sluice(["replicate", "/x.db", "ftp://host/x"]),
      2,
      /^sluice: replica URL "ftp:\/\/host\/x" has unknown scheme "ftp"/,
    );
  });
});

function createDatabase(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1);");
  db.close();
}

Deno.test("databases --json lists real SQLite files only, with replica and meta dir", async () => {
  await withTempDir(async (dir) => {
    const tenants = join(dir, "tenants");
    await Deno.mkdir(join(tenants, "eu"), { recursive: true });
    await Deno.mkdir(join(tenants, ".trash"));
    for (const name of ["a.db", "eu/b.db", ".trash/c.db", "notes.sqlite"]) {
      createDatabase(join(tenants, name));
    }
    await Deno.writeTextFile(join(tenants, "junk.db"), "this is not a database");
    await Deno.writeFile(join(tenants, "empty.db"), new Uint8Array());
    await Deno.copyFile(join(tenants, "a.db"), join(tenants, "a.db-wal"));
    await Deno.copyFile(join(tenants, "a.db"), join(tenants, "a.db-shm"));
    await Deno.copyFile(join(tenants, "a.db"), join(tenants, ".a.db"));
    await Deno.mkdir(join(tenants, ".a.db-sluice"));
    createDatabase(join(dir, "main.db"));

    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      `dbs:
  - path: main.db
    replica:
      url: s3://bk/main?endpoint=http://127.0.0.1:9000
      access-key-id: AKIAEXAMPLE
      secret-access-key: \${SECRET}
  - dir: tenants
    pattern: "*.db"
    recursive: true
    meta-path: meta
    replica: { path: backups/tenants }
  - dir: absent
    pattern: "*.db"
    replica: { path: backups/absent }
`,
    );
    const env = { SECRET: "do-not-print-me" };
    const result = await sluice(["databases", "-c", config, "--json"], env);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "");
    assert.ok(!result.stdout.includes("do-not-print-me") && !result.stdout.includes("AKIAEXAMPLE"));
    const listing = JSON.parse(result.stdout);
    assert.deepEqual(listing.databases, [
      {
        path: join(dir, "main.db"),
        replica: "s3://bk/main?endpoint=http://127.0.0.1:9000",
        metaDir: join(dir, ".main.db-sluice"),
        exists: true,
        entry: 0,
      },
      {
        path: join(tenants, "a.db"),
        replica: `file://${join(dir, "backups/tenants/a.db")}`,
        metaDir: join(dir, "meta/.a.db-sluice"),
        exists: true,
        entry: 1,
        dir: tenants,
      },
      {
        path: join(tenants, "eu/b.db"),
        replica: `file://${join(dir, "backups/tenants/eu/b.db")}`,
        metaDir: join(dir, "meta/eu/.b.db-sluice"),
        exists: true,
        entry: 1,
        dir: tenants,
      },
    ]);
    assert.deepEqual(listing.dirs, [
      {
        entry: 1,
        dir: tenants,
        pattern: "*.db",
        recursive: true,
        watch: false,
        replica: `file://${join(dir, "backups/tenants")}`,
        exists: true,
        count: 2,
      },
      {
        entry: 2,
        dir: join(dir, "absent"),
        pattern: "*.db",
        recursive: false,
        watch: false,
        replica: `file://${join(dir, "backups/absent")}`,
        exists: false,
        count: 0,
      },
    ]);
    assert.deepEqual(listing.errors, []);

    // Text form, through the default config path and a Litestream-style -flag.
    const text = await sluice(["databases"], { ...env, SLUICE_CONFIG: config });
    assert.equal(text.code, 0, text.stderr);
    const rows = text.stdout.trimEnd().split("\n");
    assert.match(rows[0], /^PATH\s+REPLICA\s+META DIR$/);
    assert.equal(rows.length, 5);
    assert.match(rows[4], /absent\/\*\.db\s+file:\/\/.*\(directory does not exist\)$/);
    assert.equal(
      (await sluice(["databases", "-config", config, "-json"], env)).stdout,
      result.stdout,
    );
  });
});

Deno.test("argument parsers return typed options", () => {
  const restore = parseRestoreArgs([
    "-c",
    "/etc/x.yml",
    "-o",
    "out.db",
    "--txid",
    "00000000000000FF",
    "--if-db-not-exists",
    "--if-replica-exists",
    "--integrity-check",
    "full",
    "--json",
    "data/app.db",
  ]);
  assert.deepEqual(restore, {
    config: "/etc/x.yml",
    output: join(Deno.cwd(), "out.db"),
    txid: 255,
    ifDBNotExists: true,
    ifReplicaExists: true,
    integrityCheck: "full",
    json: true,
    source: "data/app.db",
  });
  assert.deepEqual(parseRestoreArgs(["s3://b/p", "-o", "/tmp/x.db"]), {
    output: "/tmp/x.db",
    ifDBNotExists: false,
    ifReplicaExists: false,
    integrityCheck: "quick",
    json: false,
    source: "s3://b/p",
  });
  assert.equal(
    parseRestoreArgs(["--timestamp", "2026-11-22T15:01:21.173+01:00", "/a.db"]).timestamp
      ?.toISOString(),
    "2026-11-22T14:01:21.173Z",
  );
  assert.deepEqual(parseReplicateArgs([]), {});
  assert.deepEqual(parseReplicateArgs(["-c", "x.yml", "--exec", "app serve"]), {
    config: "x.yml",
    exec: "app serve",
  });
  assert.deepEqual(parseReplicateArgs(["app.db", "file:///backups/app"]), {
    dbPath: join(Deno.cwd(), "app.db"),
    replicaURL: "file:///backups/app",
  });
  assert.deepEqual(parseSnapshotArgs(["-config=x.yml"]), { config: "x.yml" });
  assert.deepEqual(parseDatabasesArgs(["--json"]), { json: true });
  assert.deepEqual(parseStatusArgs(["-c", "s.yml"]), { config: "s.yml", json: false });
  assert.deepEqual(parseLTXArgs(["/a.db"]), { level: "all", json: false, source: "/a.db" });
  assert.deepEqual(parseLTXArgs(["--level", "9", "--json", "s3://b/p"]), {
    level: 9,
    json: true,
    source: "s3://b/p",
  });
  // After "--", arguments are positional even when they look like options.
  assert.equal(parseLTXArgs(["--", "-weird.db"]).source, "-weird.db");
});

Deno.test("TXID and timestamp arguments are validated strictly", () => {
  assert.equal(parseTXIDArg("0000000000000001"), 1);
  assert.equal(parseTXIDArg("001fffffffffffff"), Number.MAX_SAFE_INTEGER);
  for (
    const bad of [
      "0000000000000000",
      "0020000000000000",
      "1",
      "0x0000000000000001",
      " 0000000000000001",
    ]
  ) {
    assert.throws(() => parseTXIDArg(bad), UsageError, bad);
  }
  assert.equal(
    parseTimestampArg("2026-11-22T14:01:21Z").getTime(),
    Date.UTC(2026, 10, 22, 14, 1, 21),
  );
  assert.equal(
    parseTimestampArg("2026-11-22T09:01:21-05:00").getTime(),
    Date.UTC(2026, 10, 22, 14, 1, 21),
  );
  for (
    const bad of [
      "2026-02-30T00:00:00Z",
      "2026-11-22 14:01:21Z",
      "2026-11-22T14:01:21",
      "2026-11-22T24:00:00Z",
      "2026-11-22T14:01:21+1:00",
      "1732284081",
    ]
  ) {
    assert.throws(() => parseTimestampArg(bad), UsageError, bad);
  }
});

Deno.test("logger: text and json lines, levels, child fields, redaction", () => {
  const lines: string[] = [];
  const now = () => new Date("2026-11-22T14:01:21.173Z");
  const text = createLogger({ level: "info", sink: (line) => lines.push(line), now });
  text.debug("hidden");
  const child = text.child({ db: "/x/y.db" });
  child.info("sync", { txid: "0000000000000005", pages: 3 });
  child.warn("odd value", { note: "two words", empty: "", nothing: undefined, at: new Date(0) });
  child.error("upload failed", {
    error: new Error("PUT https://AKIA:secret@host/b?X-Amz-Signature=abc123&x=1 failed"),
    secretAccessKey: "s3cr3t",
    credentials: { accessKeyId: "AKIA", region: "eu" },
    password: "p",
  });
  assert.deepEqual(lines.slice(0, 2), [
    "2026-11-22T14:01:21.173Z INFO sync db=/x/y.db txid=0000000000000005 pages=3",
    '2026-11-22T14:01:21.173Z WARN odd value db=/x/y.db note="two words" empty="" at=1970-01-01T00:00:00.000Z',
  ]);
  assert.equal(lines.length, 3);
  for (const secret of ["s3cr3t", "secret@", "abc123", "AKIA", "=p "]) {
    assert.ok(!lines[2].includes(secret), `${secret} leaked: ${lines[2]}`);
  }
  assert.match(
    lines[2],
    /^2026-11-22T14:01:21\.173Z ERROR upload failed db=\/x\/y\.db error="PUT https:\/\/\[REDACTED\]@host\/b\?X-Amz-Signature=\[REDACTED\]&x=1 failed" secretAccessKey=\[REDACTED\] credentials=\[REDACTED\] password=\[REDACTED\]$/,
  );

  const json: string[] = [];
  const logger = createLogger({
    level: "debug",
    type: "json",
    sink: (line) => json.push(line),
    now,
  });
  logger.child({ db: "/a.db" }).debug("checkpoint", {
    mode: "PASSIVE",
    msg: "shadowed",
    big: 2n ** 64n,
  });
  assert.equal(json.length, 1);
  assert.deepEqual(JSON.parse(json[0]), {
    time: "2026-11-22T14:01:21.173Z",
    level: "DEBUG",
    msg: "checkpoint",
    db: "/a.db",
    mode: "PASSIVE",
    "field.msg": "shadowed",
    big: "18446744073709551616",
  });

  const cyclic: LogFields = { name: "x" };
  cyclic.self = cyclic;
  assert.deepEqual(redact(cyclic), { name: "x", self: "[Circular]" });
  // age identities: by field name, and wherever one appears in a text.
  const key = "AGE-SECRET-KEY-1QQPQZG9Z5E7WQ0VN8JRDQEN5XV9KGSZ2EC5FQ3M0CJX0Y7NS4EWSK9Q6PF";
  assert.deepEqual(redact({ identities: [key], msg: `bad identity ${key} at line 3` }), {
    identities: "[REDACTED]",
    msg: "bad identity [REDACTED] at line 3",
  });
  assert.equal(createLogger({ level: "warn", sink: () => {} }).enabled("info"), false);
});
