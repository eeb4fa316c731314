import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  type Config,
  ConfigError,
  configFromArgs,
  findDatabase,
  formatDuration,
  formatReplicaLocation,
  loadConfig,
  metaDirFor,
  parseConfig,
  parseDuration,
  parseListenAddress,
  parseReplicaURL,
  replicaSpecFor,
} from "../src/config/mod.ts";
import { scanDirectory } from "../src/discovery/mod.ts";
import { isCandidateName, matchesPattern } from "../src/config/mod.ts";

const BASE = "/srv/app";

function parse(text: string, env: Record<string, string> = {}): Config {
  return parseConfig(text, { file: "sluice.yml", env, baseDir: BASE });
}

/** The ConfigError message `text` produces; fails when it parses. */
function errorOf(text: string, env: Record<string, string> = {}): string {
  try {
    parse(text, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    assert.ok(!err.message.includes("\n"), `message must be one line: ${err.message}`);
    return err.message;
  }
  assert.fail(`expected a ConfigError for:\n${text}`);
}

const MIN = "dbs:\n  - path: /data/app.db\n    replica: { path: /backups/app }\n";

Deno.test("a flow-style example config parses with every value in place", () => {
  const config = parse(`addr: 127.0.0.1:9090            # Prometheus /metrics (optional)
logging: { level: info, type: text }   # or json
snapshot: { interval: 24h, retention: 24h }
levels: [ { interval: 30s }, { interval: 5m }, { interval: 1h } ]
l0-retention: 5m
retention: { enabled: true }
dbs:
  - path: /var/lib/app/main.db
    replica: { url: s3://backups/main }
  - dir: /var/lib/app/tenants
    pattern: "*.db"
    recursive: true
    watch: true
    replica: { type: s3, bucket: backups, path: tenants, endpoint: http://127.0.0.1:4566, force-path-style: true }
`);
  assert.equal(config.addr, "127.0.0.1:9090");
  assert.deepEqual(config.logging, { level: "info", type: "text" });
  assert.deepEqual(config.snapshot, { interval: 86_400_000, retention: 86_400_000 });
  assert.deepEqual(config.levels, [{ interval: 30_000 }, { interval: 300_000 }, {
    interval: 3_600_000,
  }]);
  assert.equal(config.l0Retention, 300_000);
  assert.deepEqual(config.retention, { enabled: true });
  assert.equal(config.dbs.length, 2);
  const [main, tenants] = config.dbs;
  assert.equal(main.path, "/var/lib/app/main.db");
  assert.equal(main.line, 8);
  assert.deepEqual(main.replica.spec, {
    type: "s3",
    bucket: "backups",
    path: "main",
    forcePathStyle: false,
  });
  assert.equal(tenants.dir, "/var/lib/app/tenants");
  assert.equal(tenants.pattern, "*.db");
  assert.equal(tenants.recursive, true);
  assert.equal(tenants.watch, true);
  assert.equal(tenants.parkAfter, 60_000, "directory tenants park after a minute by default");
  assert.equal(main.parkAfter, 0, "a single database is not parked by default");
  assert.equal(tenants.line, 10);
  assert.deepEqual(tenants.replica.spec, {
    type: "s3",
    bucket: "backups",
    path: "tenants",
    endpoint: "http://127.0.0.1:4566",
    forcePathStyle: true,
  });
});

Deno.test("defaults are Litestream's", () => {
  const config = parse(MIN);
  assert.deepEqual(config.logging, { level: "info", type: "text" });
  assert.deepEqual(config.snapshot, { interval: 86_400_000, retention: 86_400_000 });
  assert.deepEqual(config.levels.map((level) => level.interval), [30_000, 300_000, 3_600_000]);
  assert.equal(config.l0Retention, 300_000);
  assert.equal(config.backgroundJobs, 2);
  assert.deepEqual(config.retention, { enabled: true });
  assert.equal(config.addr, undefined);
  assert.equal(config.exec, undefined);
  const [db] = config.dbs;
  assert.deepEqual(db, {
    path: "/data/app.db",
    pattern: "",
    recursive: false,
    watch: false,
    monitorInterval: 1000,
    checkpointInterval: 60_000,
    minCheckpointPageN: 1000,
    truncatePageN: 121_359,
    busyTimeout: 1000,
    parkAfter: 0, // single databases are not parked unless asked
    replica: {
      // sync-interval unset: the engine picks the backend's default (100 ms file, 1 s S3).
      spec: { type: "file", path: "/backups/app" },
      encoding: "frame",
    },
    line: 2,
  });
});

Deno.test("every key is read", () => {
  const config = parse(`
addr: ":9090"
logging:
  level: DEBUG
  type: json
  stderr: false
snapshot:
  interval: 12h
  retention: 72h
levels:
  - interval: 10s
  - interval: 1m
l0-retention: 0
background-jobs: 4
retention:
  enabled: false
exec: "php-fpm -F"
l0-retention-check-interval: 15s
shutdown-sync-timeout: 10s
dbs:
  - path: rel/app.db
    meta-path: /var/meta/app
    monitor-interval: 250ms
    checkpoint-interval: 2m
    busy-timeout: 0
    park-after: 2m
    min-checkpoint-page-count: 500
    truncate-page-n: 0
    replica:
      type: s3
      bucket: bk
      path: /a//b/
      region: eu-west-1
      endpoint: https://s3.example.com/
      force-path-style: false
      access-key-id: AKIAEXAMPLE
      secret-access-key: s3cr3t
      sync-interval: 1h30m
      encoding: block
      part-size: 16MB
      name: legacy-name
`);
  assert.equal(config.addr, ":9090");
  assert.deepEqual(config.logging, { level: "debug", type: "json", stderr: false });
  assert.deepEqual(config.snapshot, { interval: 43_200_000, retention: 259_200_000 });
  assert.deepEqual(config.levels, [{ interval: 10_000 }, { interval: 60_000 }]);
  assert.equal(config.l0Retention, 0);
  assert.equal(config.backgroundJobs, 4);
  assert.deepEqual(config.retention, { enabled: false });
  assert.equal(config.exec, "php-fpm -F");
  const [db] = config.dbs;
  assert.equal(db.path, `${BASE}/rel/app.db`);
  assert.equal(db.metaPath, "/var/meta/app");
  assert.equal(db.monitorInterval, 250);
  assert.equal(db.checkpointInterval, 120_000);
  assert.equal(db.busyTimeout, 0);
  assert.equal(db.parkAfter, 120_000);
  assert.equal(db.minCheckpointPageN, 500);
  assert.equal(db.truncatePageN, 0);
  assert.deepEqual(db.replica, {
    spec: {
      type: "s3",
      bucket: "bk",
      path: "a/b",
      region: "eu-west-1",
      endpoint: "https://s3.example.com",
      forcePathStyle: false,
      accessKeyId: "AKIAEXAMPLE",
      secretAccessKey: "s3cr3t",
      partSize: 16_000_000,
    },
    syncInterval: 5_400_000,
    encoding: "block",
  });
});

Deno.test("top-level replica settings are defaults; the replica's own win", () => {
  const config = parse(`
access-key-id: GLOBALKEY
secret-access-key: globalsecret
region: us-east-1
endpoint: localhost:9000
sync-interval: 5s
part-size: 6MiB
dbs:
  - path: /a.db
    replica: { url: s3://one/a }
  - path: /b.db
    replica: { url: "s3://two/b?region=eu-north-1", sync-interval: 2s, endpoint: https://r2.example.com }
  - path: /c.db
    replica: { path: /backups/c }
`);
  assert.deepEqual(config.dbs[0].replica.spec, {
    type: "s3",
    bucket: "one",
    path: "a",
    region: "us-east-1",
    endpoint: "http://localhost:9000",
    forcePathStyle: true,
    accessKeyId: "GLOBALKEY",
    secretAccessKey: "globalsecret",
    partSize: 6 * 1024 * 1024,
  });
  assert.equal(config.dbs[0].replica.syncInterval, 5000);
  const b = config.dbs[1].replica;
  assert.equal(b.syncInterval, 2000);
  assert.equal(b.spec.type === "s3" && b.spec.region, "eu-north-1");
  assert.equal(b.spec.type === "s3" && b.spec.endpoint, "https://r2.example.com");
  // s3 settings do not leak into a file replica
  assert.deepEqual(config.dbs[2].replica.spec, { type: "file", path: "/backups/c" });
  assert.equal(config.dbs[2].replica.syncInterval, 5000);
});

Deno.test("replica forms: url, path, bucket without type, legacy replicas list", () => {
  const config = parse(`
dbs:
  - path: /a.db
    replica: { url: "file:///backups/a" }
  - path: /b.db
    replica: { path: ../backups/b }
  - path: /c.db
    replica: { bucket: bk, path: c }
  - path: /d.db
    replicas:
      - url: s3://bk/d
`);
  assert.deepEqual(config.dbs.map((db) => db.replica.spec), [
    { type: "file", path: "/backups/a" },
    { type: "file", path: "/srv/backups/b" },
    { type: "s3", bucket: "bk", path: "c", forcePathStyle: false },
    { type: "s3", bucket: "bk", path: "d", forcePathStyle: false },
  ]);
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replicas: [{ path: /x }, { path: /y }]\n"),
    /^sluice\.yml:3: dbs\[0\]\.replicas: sluice replicates each database to exactly one replica .*got 2/,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica: { path: /x }\n    replicas: [{ path: /y }]\n"),
    /^sluice\.yml:4: dbs\[0\]\.replicas: set replica or replicas, not both/,
  );
  assert.match(errorOf("dbs:\n  - path: /a.db\n"), /^sluice\.yml:2: dbs\[0\]: needs a replica/);
});

Deno.test("environment expansion", () => {
  const env = {
    BUCKET: "bk",
    DIR: "/data",
    PAGES: "2000",
    SECRET: "a: b, #c",
    STAR: "*starts-with-star",
    EMPTY: "",
  };
  const config = parse(
    `
# commented out: \${NOT_SET}
dbs:
  - path: $DIR/app.db
    min-checkpoint-page-count: \${PAGES}
    meta-path: \${META:-/var/meta}
    replica: { url: "s3://\${BUCKET}/p$$", access-key-id: \${STAR}, secret-access-key: \${SECRET} }
  - path: \${DIR}/b.db
    busy-timeout: \${EMPTY:-2s}
    replica: { path: /b, encoding: \${ENC:-block} }
`,
    env,
  );
  const [a, b] = config.dbs;
  assert.equal(a.path, "/data/app.db");
  assert.equal(a.minCheckpointPageN, 2000);
  assert.equal(a.metaPath, "/var/meta");
  assert.deepEqual(a.replica.spec, {
    type: "s3",
    bucket: "bk",
    path: "p$",
    forcePathStyle: false,
    accessKeyId: "*starts-with-star",
    secretAccessKey: "a: b, #c",
  });
  assert.equal(b.busyTimeout, 2000);
  assert.equal(b.replica.encoding, "block");

  assert.equal(
    errorOf(MIN.replace("/data/app.db", "${DATA_DIR}/app.db")),
    "sluice.yml:2: environment variable DATA_DIR is not set (write ${DATA_DIR:-} to allow it to be empty, or $$ for a literal $)",
  );
  assert.match(
    errorOf("dbs: ${1BAD}\n"),
    /^sluice\.yml:1: invalid environment reference "\$\{1BAD\}"/,
  );
  assert.match(
    errorOf(MIN.replace("/data/app.db", "$ML"), { ML: "a\nb" }),
    /^sluice\.yml:2: environment variable ML contains a line break/,
  );
});

Deno.test("an empty env value leaves an optional key unset", () => {
  const config = parse(`addr: \${ADDR}\nexec: \${EXEC:-}\n${MIN}`, { ADDR: "" });
  assert.equal(config.addr, undefined);
  assert.equal(config.exec, undefined);
});

Deno.test("unknown keys name the line, the place and a close match", () => {
  assert.equal(
    errorOf("dbs:\n  - path: /a.db\n    replica: { path: /b }\n    monitr-interval: 1s\n"),
    'sluice.yml:4: unknown key "monitr-interval" in dbs[0] (did you mean "monitor-interval"?)',
  );
  assert.equal(
    errorOf(`${MIN}  - pth: /b.db\n`),
    'sluice.yml:4: unknown key "pth" in dbs[1] (did you mean "path"?)',
  );
  assert.equal(
    errorOf(`logging:\n  levle: debug\n${MIN}`),
    'sluice.yml:2: unknown key "levle" in logging (did you mean "level"?)',
  );
  assert.equal(
    errorOf("dbs:\n  - path: /a.db\n    replica:\n      url: s3://b/p\n      regoin: x\n"),
    'sluice.yml:5: unknown key "regoin" in dbs[0].replica (did you mean "region"?)',
  );
  assert.equal(
    errorOf(`levels:\n  - interval: 1s\n    intreval: 2s\n${MIN}`),
    'sluice.yml:3: unknown key "intreval" in levels[0] (did you mean "interval"?)',
  );
  assert.equal(errorOf(`foo: 1\n${MIN}`), 'sluice.yml:1: unknown key "foo" at the top level');
  assert.equal(
    errorOf(`snapshots: { interval: 1h }\n${MIN}`),
    'sluice.yml:1: unknown key "snapshots" at the top level (did you mean "snapshot"?)',
  );
  assert.equal(
    errorOf(`${MIN}    meta_path: /x\n`),
    'sluice.yml:4: unknown key "meta_path" in dbs[0] (did you mean "meta-path"?)',
  );
  assert.equal(
    errorOf("dbs:\n  - path: /a.db\n    sync-interval: 1s\n    replica: { path: /b }\n"),
    'sluice.yml:3: key "sync-interval" does not belong in dbs[0]; put it in replica',
  );
  assert.equal(
    errorOf(`path: /a.db\n${MIN}`),
    'sluice.yml:1: key "path" does not belong at the top level; put it in each dbs entry',
  );
  assert.equal(
    errorOf("dbs:\n  - path: /a.db\n    replica: { path: /b, monitor-interval: 1s }\n"),
    'sluice.yml:3: key "monitor-interval" does not belong in dbs[0].replica; put it in the dbs entry, not its replica',
  );
});

Deno.test("Litestream settings sluice does not implement are refused unless harmless", () => {
  assert.equal(
    errorOf(`mcp-addr: ":3001"\n${MIN}`),
    `sluice.yml:1: mcp-addr: Litestream's "mcp-addr" is not supported by sluice; remove it`,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica: { url: s3://b/p, sse-kms-key-id: k }\n"),
    /^sluice\.yml:3: dbs\[0\]\.replica\.sse-kms-key-id: Litestream's "sse-kms-key-id" is not supported/,
  );
  assert.match(
    errorOf(
      "dbs:\n  - path: /a.db\n    restore-if-db-not-exists: true\n    replica: { path: /b }\n",
    ),
    /^sluice\.yml:3: dbs\[0\]\.restore-if-db-not-exists: Litestream's .* not supported/,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica: { url: s3://b/p, skip-verify: true }\n"),
    /^sluice\.yml:3: dbs\[0\]\.replica\.skip-verify: skip-verify: true is not supported/,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica: { type: nats, path: /x }\n"),
    /^sluice\.yml:3: dbs\[0\]\.replica\.type: nats replicas are not supported by sluice; use file or s3/,
  );
  // Harmless values are accepted.
  parse(
    "verify-compaction: false\ndbs:\n  - path: /a.db\n    restore-if-db-not-exists: false\n" +
      "    replica: { url: s3://b/p, skip-verify: false, auto-recover: false, concurrency: 4 }\n",
  );
});

Deno.test("wrong types say what was expected and what was found", () => {
  const cases: [string, RegExp][] = [
    [
      `logging: { stderr: yes }\n${MIN}`,
      /^sluice\.yml:1: logging\.stderr: expected true or false, got "yes"$/,
    ],
    [
      `logging: { level: loud }\n${MIN}`,
      /^sluice\.yml:1: logging\.level: expected one of debug, info, warn, error, got "loud"$/,
    ],
    [
      `logging: { type: xml }\n${MIN}`,
      /^sluice\.yml:1: logging\.type: expected one of text, json, got "xml"$/,
    ],
    [`logging: debug\n${MIN}`, /^sluice\.yml:1: logging: expected a mapping, got "debug"$/],
    [
      `retention: { enabled: 1 }\n${MIN}`,
      /^sluice\.yml:1: retention\.enabled: expected true or false, got 1$/,
    ],
    [
      `levels: { interval: 1s }\n${MIN}`,
      /^sluice\.yml:1: levels: expected a list of \{ interval: DURATION \}, got a mapping$/,
    ],
    [
      `levels: [30s]\n${MIN}`,
      /^sluice\.yml:1: levels\[0\]: expected \{ interval: DURATION \}, got "30s"$/,
    ],
    [`levels: [{}]\n${MIN}`, /^sluice\.yml:1: levels\[0\]: interval is required$/],
    [`levels: []\n${MIN}`, /^sluice\.yml:1: levels: needs at least one level \(L1\)$/],
    [
      `levels: [${Array(9).fill("{interval: 1s}").join(",")}]\n${MIN}`,
      /^sluice\.yml:1: levels: at most 8 levels .*got 9$/,
    ],
    [`exec: [a, b]\n${MIN}`, /^sluice\.yml:1: exec: expected a string, got a list$/],
    [
      `addr: 9090\n${MIN}`,
      /^sluice\.yml:1: addr: expected host:port such as "127\.0\.0\.1:9090" or ":9090", got "9090"$/,
    ],
    [`addr: "host:99999"\n${MIN}`, /^sluice\.yml:1: addr: expected host:port/],
    ["dbs: {}\n", /^sluice\.yml:1: dbs: expected a list of databases, got a mapping$/],
    ["dbs: []\n", /^sluice\.yml:1: dbs: at least one database is required/],
    ["addr: ':1'\n", /^sluice\.yml:1: dbs: at least one database is required/],
    [
      "dbs:\n  - /a.db\n",
      /^sluice\.yml:2: dbs\[0\]: expected a mapping with path or dir, got "\/a\.db"$/,
    ],
    [
      "dbs:\n  - path: [a]\n    replica: { path: /b }\n",
      /^sluice\.yml:2: dbs\[0\]\.path: expected a string, got a list$/,
    ],
    [
      "dbs:\n  - path: ''\n    replica: { path: /b }\n",
      /^sluice\.yml:2: dbs\[0\]\.path: must not be empty$/,
    ],
    [
      "dbs:\n  - path: s3://b/x\n    replica: { path: /b }\n",
      /^sluice\.yml:2: dbs\[0\]\.path: expected a local path, got a URL$/,
    ],
    [
      "dbs:\n  - replica: { path: /b }\n",
      /^sluice\.yml:2: dbs\[0\]: needs path \(one database\) or dir/,
    ],
    [
      "dbs:\n  - path: /a\n    dir: /d\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.dir: set either path .* or dir .*, not both$/,
    ],
    [
      "dbs:\n  - dir: /d\n    replica: { path: /b }\n",
      /^sluice\.yml:2: dbs\[0\]\.dir: a dir entry needs a pattern/,
    ],
    [
      "dbs:\n  - dir: /d\n    pattern: '*.{db'\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.pattern: pattern has an unclosed \{$/,
    ],
    [
      "dbs:\n  - dir: /d\n    pattern: '[ab.db'\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.pattern: pattern has an unclosed \[$/,
    ],
    [
      "dbs:\n  - dir: /d\n    pattern: '/abs/*.db'\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.pattern: pattern must be relative/,
    ],
    [
      "dbs:\n  - path: /a\n    watch: true\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.watch: only applies to a dir entry$/,
    ],
    [
      "dbs:\n  - path: /a\n    recursive: true\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.recursive: only applies to a dir entry$/,
    ],
    [
      "dbs:\n  - dir: /d\n    pattern: '*'\n    watch: 'true'\n    replica: { path: /b }\n",
      /^sluice\.yml:4: dbs\[0\]\.watch: expected true or false, got "true"$/,
    ],
    [
      "dbs:\n  - path: /a\n    min-checkpoint-page-count: 1.5\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.min-checkpoint-page-count: expected a whole number, got 1\.5$/,
    ],
    [
      "dbs:\n  - path: /a\n    min-checkpoint-page-count: 0\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.min-checkpoint-page-count: must be at least 1, got 0$/,
    ],
    [
      "dbs:\n  - path: /a\n    truncate-page-n: '100'\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.truncate-page-n: expected a whole number, got "100"$/,
    ],
    [
      "dbs:\n  - path: /a\n    truncate-page-n: 10\n    replica: { path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.truncate-page-n: truncate-page-n \(10\) must be at least min-checkpoint-page-count \(1000\), or 0 to disable$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: /b\n",
      /^sluice\.yml:3: dbs\[0\]\.replica: expected a mapping, got "\/b"$/,
    ],
    ["dbs:\n  - path: /a\n    replica: {}\n", /^sluice\.yml:3: dbs\[0\]\.replica: needs url/],
    ["dbs:\n  - path: /a\n    replica:\n", /^sluice\.yml:2: dbs\[0\]: needs a replica/],
    [
      "dbs:\n  - path: /a\n    replica: { type: s3 }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica: an s3 replica needs bucket/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { type: file }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica: needs url .* or path/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { type: ftp, path: /b }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.type: expected one of file, s3, .*got "ftp"$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { type: file, url: s3://b/p }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.type: is file but the url is a s3 location$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { url: s3://b/p, path: x }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.path: set either url or path, not both/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { path: s3://b/p }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.path: is a URL; put it in url: instead$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { path: /b, bucket: x, type: file }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.bucket: only applies to s3 replicas$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { path: /b, encoding: lz4 }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.encoding: expected one of frame, block, got "lz4"$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { url: s3://b/p, force-path-style: 1 }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.force-path-style: expected true or false, got 1$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { url: s3://b/p, endpoint: 'ftp://x' }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.endpoint: endpoint "ftp:\/\/x" must be an http:\/\/ or https:\/\/ URL$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { url: s3://b/p, access-key-id: AKIA }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica: secret-access-key is missing; set both/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { url: s3://b/p, part-size: 5MB }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.part-size: must be at least 5242880 bytes, got 5000000$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { url: s3://b/p, part-size: 5 megs }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.part-size: expected a size such as "5MiB" or "16MB", got "5 megs"$/,
    ],
    [
      "dbs:\n  - path: /a\n    replica: { path: /b, part-size: 8MiB }\n",
      /^sluice\.yml:3: dbs\[0\]\.replica\.part-size: only applies to s3 replicas$/,
    ],
    ["[1, 2]\n", /^sluice\.yml:1: expected a mapping at the top level, got a list$/],
    ["", /^sluice\.yml:1: the file is empty/],
    ["# only a comment\n", /^sluice\.yml:1: the file is empty/],
    [`${MIN}dbs: []\n`, /^sluice\.yml:4: invalid YAML: Map keys must be unique$/],
    ["dbs:\n  - path: /a\n   replica: x\n", /^sluice\.yml:3: invalid YAML: /],
    ["dbs: &x [*x]\n", /^sluice\.yml:1: /],
    ["<<: { addr: ':1' }\n" + MIN, /^sluice\.yml:1: unknown key "<<" at the top level$/],
  ];
  for (const [text, expected] of cases) assert.match(errorOf(text), expected, text);
});

Deno.test("durations: Go syntax, units required, range checked", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("24h"), 86_400_000);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1.5h"), 5_400_000);
  assert.equal(parseDuration(".5s"), 500);
  assert.equal(parseDuration("1m30s250ms"), 90_250);
  assert.equal(parseDuration("1500us"), 1.5);
  assert.equal(parseDuration("1000000ns"), 1);
  assert.equal(parseDuration("0"), 0);
  assert.equal(parseDuration("-1s"), -1000);
  for (
    const bad of ["", "5", "1x", "s", "1 s", "1h 30m", "1.2.3s", "h1", "1hh", "--1s", "1S", "NaNs"]
  ) {
    assert.throws(() => parseDuration(bad), RangeError, bad);
  }
  assert.equal(formatDuration(5_400_000), "1h30m");
  assert.equal(formatDuration(500), "500ms");
  assert.equal(formatDuration(1500), "1.5s");
  assert.equal(formatDuration(0), "0s");

  const at = (key: string, value: string) =>
    errorOf(`dbs:\n  - path: /a\n    ${key}: ${value}\n    replica: { path: /b }\n`);
  assert.equal(
    at("monitor-interval", "1x"),
    'sluice.yml:3: dbs[0].monitor-interval: expected a duration such as "30s", "5m" or "1h30m", got "1x"',
  );
  assert.equal(
    at("checkpoint-interval", "60"),
    'sluice.yml:3: dbs[0].checkpoint-interval: duration 60 needs a unit, such as "30s", "5m" or "1h30m"',
  );
  assert.equal(
    at("monitor-interval", "-1s"),
    'sluice.yml:3: dbs[0].monitor-interval: must not be negative, got "-1s"',
  );
  assert.equal(
    at("monitor-interval", "0s"),
    'sluice.yml:3: dbs[0].monitor-interval: must be greater than 0, got "0s"',
  );
  assert.equal(
    at("monitor-interval", "true"),
    'sluice.yml:3: dbs[0].monitor-interval: expected a duration such as "30s", "5m" or "1h30m", got true',
  );
  assert.match(
    errorOf(`snapshot: { interval: 0 }\n${MIN}`),
    /^sluice\.yml:1: snapshot\.interval: must be greater than 0, got 0$/,
  );
  assert.match(
    errorOf(`snapshot: { retention: 1d }\n${MIN}`),
    /^sluice\.yml:1: snapshot\.retention: expected a duration/,
  );
  assert.match(
    errorOf(`l0-retention: -5m\n${MIN}`),
    /^sluice\.yml:1: l0-retention: must not be negative/,
  );
  assert.match(
    errorOf(`levels: [{ interval: 0s }]\n${MIN}`),
    /^sluice\.yml:1: levels\[0\]\.interval: must be greater than 0/,
  );
  assert.match(
    errorOf(`shutdown-sync-timeout: soon\n${MIN}`),
    /^sluice\.yml:1: shutdown-sync-timeout: expected a duration/,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a\n    replica: { path: /b, sync-interval: 0 }\n"),
    /^sluice\.yml:3: dbs\[0\]\.replica\.sync-interval: must be greater than 0, got 0$/,
  );
});

Deno.test("replica URLs: accepted forms", () => {
  assert.deepEqual(parseReplicaURL("file:///var/backups/app/"), {
    type: "file",
    path: "/var/backups/app",
  });
  assert.deepEqual(parseReplicaURL("file:///var/my%20backups"), {
    type: "file",
    path: "/var/my backups",
  });
  assert.deepEqual(parseReplicaURL("backups/app", { baseDir: "/srv" }), {
    type: "file",
    path: "/srv/backups/app",
  });
  assert.deepEqual(parseReplicaURL("~/backups", { home: "/home/op" }), {
    type: "file",
    path: "/home/op/backups",
  });
  assert.deepEqual(parseReplicaURL("s3://bucket"), {
    type: "s3",
    bucket: "bucket",
    path: "",
    forcePathStyle: false,
  });
  assert.deepEqual(
    parseReplicaURL(
      "s3://bucket/tenants/eu/?endpoint=http://127.0.0.1:4566&region=us-east-1&force-path-style=true",
    ),
    {
      type: "s3",
      bucket: "bucket",
      path: "tenants/eu",
      region: "us-east-1",
      endpoint: "http://127.0.0.1:4566",
      forcePathStyle: true,
    },
  );
  // Litestream's spelling, and an endpoint without scheme; an endpoint implies path style.
  assert.deepEqual(parseReplicaURL("s3://b/p?endpoint=localhost:9000"), {
    type: "s3",
    bucket: "b",
    path: "p",
    endpoint: "http://localhost:9000",
    forcePathStyle: true,
  });
  assert.deepEqual(parseReplicaURL("s3://b/p?endpoint=minio.example.com&forcePathStyle=false"), {
    type: "s3",
    bucket: "b",
    path: "p",
    endpoint: "https://minio.example.com",
    forcePathStyle: false,
  });
  assert.deepEqual(parseReplicaURL("s3://my-bucket.s3.eu-west-1.amazonaws.com/db"), {
    type: "s3",
    bucket: "my-bucket",
    path: "db",
    region: "eu-west-1",
    forcePathStyle: false,
  });
});

Deno.test("replica URLs: bad ones name the URL and the accepted forms, never credentials", () => {
  const bad: [string, RegExp][] = [
    [
      "nats://bucket/db",
      /^replica URL "nats:\/\/bucket\/db": nats replicas are not supported by sluice; use file:\/\/\/abs\/dir, a plain path, /,
    ],
    [
      "ftp://host/db",
      /^replica URL "ftp:\/\/host\/db" has unknown scheme "ftp"; use file:\/\/\/abs\/dir/,
    ],
    ["file://host/db", /a file URL needs an absolute path and no host/],
    ["file:///", /the replica cannot be the root directory/],
    ["file:///x?y=1", /a file URL takes no query/],
    ["s3:///path", /names no bucket/],
    ["s3://bucket:9000/p", /a port belongs in the endpoint/],
    [
      "s3://b/p?endpiont=x",
      /unknown query parameter "endpiont"; accepted: endpoint, region, force-path-style/,
    ],
    ["s3://b/p?force-path-style=yes", /force-path-style must be true or false, got "yes"/],
    ["s3://b/p?region=a&region=b", /query parameter "region" is given twice/],
    ["s3://b/p?endpoint=ftp://x", /must be an http:\/\/ or https:\/\/ URL/],
    ["s3://b/p?skip-verify=true", /skip-verify=true is not supported/],
    ["", /^empty replica URL; use /],
  ];
  for (const [url, expected] of bad) {
    assert.throws(() => parseReplicaURL(url), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, expected, url);
      return true;
    });
  }
  assert.throws(
    () => parseReplicaURL("s3://AKIAXYZ:topsecret@bucket/db"),
    (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /must not contain credentials/);
      assert.ok(!err.message.includes("topsecret") && !err.message.includes("AKIAXYZ"));
      return true;
    },
  );
  assert.equal(
    formatReplicaLocation({
      type: "s3",
      bucket: "b",
      path: "p/q",
      endpoint: "http://127.0.0.1:9000",
      region: "x",
      accessKeyId: "AKIA",
      secretAccessKey: "hidden",
    }),
    "s3://b/p/q?endpoint=http://127.0.0.1:9000&region=x",
  );
  assert.equal(formatReplicaLocation({ type: "file", path: "/a b" }), "file:///a%20b");
});

Deno.test("secrets never appear in config errors", () => {
  const secret = "wJalrXUtnFEMI-K7MDENG";
  const messages = [
    errorOf(`dbs:\n  - path: /a\n    replica: { url: s3://b/p, secret-access-key: [${secret}] }\n`),
    errorOf(
      `dbs:\n  - path: /a\n    replica: { url: s3://b/p, secret-access-key: ${secret} }\n   bad: indent\n`,
    ),
    errorOf(
      `secret-access-key: \${S}\ndbs:\n  - path: /a\n    replica: { url: s3://b/p, secret-access-key: \${S} } }\n`,
      {
        S: secret,
      },
    ),
    errorOf(`dbs:\n  - path: /a\n    replica: { url: "s3://u:${secret}@b/p" }\n`),
  ];
  for (const message of messages) assert.ok(!message.includes(secret), message);
});

Deno.test("databases must not share a database, a meta directory or a replica location", () => {
  const both = (a: string, b: string) => errorOf(`dbs:\n  - ${a}\n  - ${b}\n`);
  assert.equal(
    both("path: /a.db\n    replica: { path: /r1 }", "path: /x/../a.db\n    replica: { path: /r2 }"),
    "sluice.yml:4: dbs[1]: database /a.db is already configured in dbs[0] (line 2)",
  );
  assert.equal(
    both(
      "dir: /data\n    pattern: '*.db'\n    replica: { path: /r1 }",
      "path: /data/t.db\n    replica: { path: /r2 }",
    ),
    "sluice.yml:5: dbs[1]: database /data/t.db is also found by the dir entry dbs[0] (line 2)",
  );
  assert.equal(
    both(
      "path: /data/sub/t.db\n    replica: { path: /r2 }",
      "dir: /data\n    pattern: '*.db'\n    recursive: true\n    replica: { path: /r1 }",
    ),
    "sluice.yml:4: dbs[1]: this dir entry also finds /data/sub/t.db, already configured in dbs[0] (line 2)",
  );
  // Not recursive, or a pattern that does not match: no overlap.
  parse(
    "dbs:\n  - path: /data/sub/t.db\n    replica: { path: /r2 }\n  - dir: /data\n    pattern: '*.db'\n    replica: { path: /r1 }\n",
  );
  parse(
    "dbs:\n  - path: /data/t.sqlite\n    replica: { path: /r2 }\n  - dir: /data\n    pattern: '*.db'\n    replica: { path: /r1 }\n",
  );
  assert.equal(
    both(
      "dir: /data\n    pattern: '*.db'\n    replica: { path: /r1 }",
      "dir: /data/\n    pattern: '*.db'\n    replica: { path: /r2 }",
    ),
    'sluice.yml:5: dbs[1]: dir /data with pattern "*.db" is already configured in dbs[0] (line 2)',
  );
  assert.equal(
    both(
      "path: /a.db\n    meta-path: /meta/shared\n    replica: { path: /r1 }",
      "path: /b.db\n    meta-path: /meta/shared\n    replica: { path: /r2 }",
    ),
    "sluice.yml:5: dbs[1]: meta directory /meta/shared is also used by dbs[0] (line 2); set a distinct meta-path",
  );
  assert.match(
    both(
      "path: /a.db\n    replica: { path: /r1 }",
      "path: /x/.a.db-sluice\n    meta-path: /.a.db-sluice\n    replica: { path: /r2 }",
    ),
    /meta directory \/\.a\.db-sluice is also used by dbs\[0\]/,
  );
  assert.match(
    both(
      "dir: /d1\n    pattern: '*'\n    meta-path: /m\n    replica: { path: /r1 }",
      "dir: /d2\n    pattern: '*'\n    meta-path: /m\n    replica: { path: /r2 }",
    ),
    /^sluice\.yml:6: dbs\[1\]: meta-path \/m is also the meta-path of dbs\[0\] \(line 2\)/,
  );
  assert.equal(
    both(
      "path: /a.db\n    replica: { url: s3://bk/x }",
      "path: /b.db\n    replica: { bucket: bk, path: /x/ }",
    ),
    "sluice.yml:4: dbs[1]: replica s3://bk/x is already the replica of dbs[0] (line 2)",
  );
  assert.equal(
    both("path: /a.db\n    replica: { url: file:///r }", "path: /b.db\n    replica: { path: /r/ }"),
    "sluice.yml:4: dbs[1]: replica file:///r is already the replica of dbs[0] (line 2)",
  );
  assert.match(
    both(
      "dir: /d\n    pattern: '*.db'\n    replica: { url: s3://bk/tenants }",
      "path: /a.db\n    replica: { url: s3://bk/tenants/a.db }",
    ),
    /^sluice\.yml:5: dbs\[1\]: replica s3:\/\/bk\/tenants\/a\.db is inside s3:\/\/bk\/tenants, where the dir entry dbs\[0\] \(line 2\) replicates/,
  );
  assert.match(
    both(
      "path: /a.db\n    replica: { url: s3://bk/tenants/a.db }",
      "dir: /d\n    pattern: '*.db'\n    replica: { url: s3://bk/tenants }",
    ),
    /^sluice\.yml:4: dbs\[1\]: this dir entry replicates its databases below s3:\/\/bk\/tenants, which contains/,
  );
  // Same prefix on another bucket or endpoint is fine; so is a sibling prefix.
  parse(
    "dbs:\n  - path: /a.db\n    replica: { url: s3://bk/x }\n  - path: /b.db\n    replica: { url: s3://other/x }\n" +
      "  - path: /c.db\n    replica: { url: 's3://bk/x?endpoint=http://127.0.0.1:9000' }\n" +
      "  - path: /d.db\n    replica: { url: s3://bk/xy }\n",
  );
});

Deno.test("meta directories and replica locations per database", () => {
  const config = parse(`
dbs:
  - path: /data/main.db
    replica: { url: s3://bk/main }
  - path: /data/other.db
    meta-path: /var/meta/other
    replica: { path: /r/other }
  - dir: /data/tenants
    pattern: "*.db"
    recursive: true
    replica: { url: s3://bk/tenants }
  - dir: /data/files
    pattern: "*.sqlite"
    meta-path: /var/meta/files
    replica: { path: /r/files }
`);
  const [main, other, tenants, files] = config.dbs;
  assert.equal(metaDirFor("/data/main.db", main), "/data/.main.db-sluice");
  assert.equal(metaDirFor("/data/other.db", other), "/var/meta/other");
  assert.equal(metaDirFor("/data/tenants/eu/a.db", tenants), "/data/tenants/eu/.a.db-sluice");
  assert.equal(metaDirFor("/data/files/x.sqlite", files), "/var/meta/files/.x.sqlite-sluice");
  assert.equal(
    metaDirFor("/data/files/sub/x.sqlite", files),
    "/var/meta/files/sub/.x.sqlite-sluice",
  );
  assert.throws(() => metaDirFor("/elsewhere/x.sqlite", files), ConfigError);

  assert.deepEqual(replicaSpecFor("/data/main.db", main), main.replica.spec);
  assert.deepEqual(replicaSpecFor("/data/tenants/eu/a.db", tenants), {
    type: "s3",
    bucket: "bk",
    path: "tenants/eu/a.db",
    forcePathStyle: false,
  });
  assert.deepEqual(replicaSpecFor("/data/files/x.sqlite", files), {
    type: "file",
    path: "/r/files/x.sqlite",
  });

  assert.equal(findDatabase(config, "/data/main.db")?.config, main);
  const found = findDatabase(config, "/data/tenants/eu/a.db");
  assert.equal(found?.config, tenants);
  assert.equal(found?.metaDir, "/data/tenants/eu/.a.db-sluice");
  assert.equal(found?.replica.type === "s3" && found.replica.path, "tenants/eu/a.db");
  assert.equal(findDatabase(config, "/data/tenants/eu/a.db-wal"), undefined);
  assert.equal(findDatabase(config, "/data/tenants/.hidden/a.db"), undefined);
  assert.equal(findDatabase(config, "/data/files/sub/x.sqlite"), undefined); // not recursive
  assert.equal(findDatabase(config, "/data/nowhere.db"), undefined);
});

Deno.test("configFromArgs: one database, every default", () => {
  const config = configFromArgs("app.db", "s3://bk/app?region=eu-west-1");
  assert.equal(config.dbs.length, 1);
  assert.equal(config.dbs[0].path, join(Deno.cwd(), "app.db"));
  assert.deepEqual(config.dbs[0].replica.spec, {
    type: "s3",
    bucket: "bk",
    path: "app",
    region: "eu-west-1",
    forcePathStyle: false,
  });
  assert.equal(config.dbs[0].monitorInterval, 1000);
  assert.equal(config.snapshot.interval, 86_400_000);
  assert.throws(() => configFromArgs("app.db", "nats://x/y"), ConfigError);
  assert.throws(() => configFromArgs("s3://bk/app", "/tmp/x"), /looks like a URL/);
});

Deno.test("listen addresses", () => {
  assert.deepEqual(parseListenAddress(":9090"), { hostname: "0.0.0.0", port: 9090 });
  assert.deepEqual(parseListenAddress("127.0.0.1:0"), { hostname: "127.0.0.1", port: 0 });
  assert.deepEqual(parseListenAddress("[::1]:9090"), { hostname: "::1", port: 9090 });
  assert.throws(() => parseListenAddress("localhost"), ConfigError);
});

Deno.test("loadConfig: file:line in messages, paths relative to the file, missing file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      path,
      "dbs:\n  - path: app.db\n    replica: { path: ~/backups }\n  - dir: tenants\n    pattern: '*.db'\n    meta-path: meta\n    replica: { url: s3://bk/t }\n",
    );
    const config = await loadConfig(path, { HOME: "/home/op" });
    assert.equal(config.source, path);
    assert.equal(config.dbs[0].path, join(dir, "app.db"));
    assert.deepEqual(config.dbs[0].replica.spec, { type: "file", path: "/home/op/backups" });
    assert.equal(config.dbs[1].dir, join(dir, "tenants"));
    assert.equal(config.dbs[1].metaPath, join(dir, "meta"));

    await Deno.writeTextFile(
      path,
      "dbs:\n  - path: app.db\n    replica: { path: /b }\n    bogus: 1\n",
    );
    await assert.rejects(() => loadConfig(path, {}), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `${path}:4: unknown key "bogus" in dbs[0]`);
      assert.equal(err.line, 4);
      return true;
    });
    await Deno.writeTextFile(path, "dbs:\n  - path: ~/app.db\n    replica: { path: /b }\n");
    await assert.rejects(
      () => loadConfig(path, {}),
      /sluice\.yml:2: dbs\[0\]\.path: cannot expand "~"/,
    );
    await assert.rejects(
      () => loadConfig(join(dir, "missing.yml"), {}),
      (err: Error) =>
        err instanceof ConfigError && /missing\.yml does not exist$/.test(err.message),
    );
    await assert.rejects(() => loadConfig(dir, {}), /is a directory/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function createDatabase(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1);");
  db.close();
}

Deno.test("discover: names, patterns, and a scan that keeps only SQLite databases", async () => {
  assert.ok(isCandidateName("a.db"));
  for (const name of [".a.db", "a.db-wal", "a.db-shm", "a.db-journal", "a.db.tmp", "a.db~", ""]) {
    assert.ok(!isCandidateName(name), name);
  }
  assert.ok(matchesPattern("a.db", "*.db"));
  assert.ok(matchesPattern("eu/a.db", "*.db")); // no slash: the file name at any depth
  assert.ok(!matchesPattern("a.sqlite", "*.db"));
  assert.ok(matchesPattern("eu/a.db", "eu/*.db"));
  assert.ok(!matchesPattern("us/a.db", "eu/*.db"));
  assert.ok(matchesPattern("a.sqlite", "*.{db,sqlite}"));

  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "eu/deep"), { recursive: true });
    await Deno.mkdir(join(dir, ".meta"));
    for (const name of ["a.db", "eu/b.db", "eu/deep/c.db", ".meta/d.db", "e.sqlite"]) {
      createDatabase(join(dir, name));
    }
    await Deno.writeTextFile(join(dir, "junk.db"), "plain text, not SQLite at all");
    await Deno.writeFile(join(dir, "empty.db"), new Uint8Array());
    await Deno.copyFile(join(dir, "a.db"), join(dir, "a.db-wal"));
    await Deno.copyFile(join(dir, "a.db"), join(dir, ".hidden.db"));
    await Deno.symlink(join(dir, "a.db"), join(dir, "link.db"));

    const scan = async (pattern: string, recursive: boolean, isKnown?: (p: string) => boolean) =>
      (await Array.fromAsync(scanDirectory(dir, { pattern, recursive, isKnown }))).map((path) =>
        path.slice(dir.length + 1)
      );
    assert.deepEqual(await scan("*.db", false), ["a.db"]);
    assert.deepEqual(await scan("*.db", true), ["a.db", "eu/b.db", "eu/deep/c.db"]);
    assert.deepEqual(await scan("*", true), ["a.db", "e.sqlite", "eu/b.db", "eu/deep/c.db"]);
    assert.deepEqual(await scan("eu/*.db", true), ["eu/b.db"]);
    // A known database is yielded without being opened (here: its header is junk).
    assert.deepEqual(
      await scan("*.db", false, (path) => path.endsWith("junk.db")),
      ["a.db", "junk.db"],
    );
    await assert.rejects(
      () => Array.fromAsync(scanDirectory(join(dir, "missing"), { pattern: "*" })),
      Deno.errors.NotFound,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
