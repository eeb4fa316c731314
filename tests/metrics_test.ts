/**
 * `/metrics` and `/status` of a real `sluice replicate` on `addr:`, replicating to a real S3
 * server process (fauxqs): the exposition parses as Prometheus text (checked line by line by the
 * strict parser below), and the replication lag rises while the S3 server is down and returns to
 * zero once it is back. With more databases than `metrics: per-database-limit`, only the
 * aggregates are exported, and they add up. Plus the event-loop delay meter on a driven clock and
 * the aggregation over 100,000 status rows.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, freePort, runWriter, startReplicate, waitFor } from "./_sluice.ts";
import { FAUXQS_CREDENTIALS, startS3Server } from "./_s3.ts";
import { LoopDelayMonitor, Metrics } from "../src/daemon/mod.ts";
import type { DatabaseStatus } from "../src/engine/mod.ts";

// Subprocesses inherit these: static test credentials, and never the EC2 metadata endpoint.
Deno.env.set("AWS_ACCESS_KEY_ID", FAUXQS_CREDENTIALS.accessKeyId);
Deno.env.set("AWS_SECRET_ACCESS_KEY", FAUXQS_CREDENTIALS.secretAccessKey);
Deno.env.set("AWS_EC2_METADATA_DISABLED", "true");

/** One sample of the exposition. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/**
 * Parses the Prometheus text exposition format (version 0.0.4) strictly: every line is blank, a
 * `# HELP`/`# TYPE` line or a sample; label values use only the `\\`, `\"` and `\n` escapes;
 * TYPE comes once per metric and before its samples; a metric's samples are contiguous; no
 * series appears twice. Throws naming the offending line.
 */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  assert.ok(text.endsWith("\n"), "exposition ends with a line feed");
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const finished = new Set<string>();
  const seen = new Set<string>();
  let current: string | undefined;
  const lines = text.split("\n").slice(0, -1);
  for (const [index, line] of lines.entries()) {
    const where = `line ${index + 1}: ${JSON.stringify(line)}`;
    if (line === "") continue;
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (match === null) continue; // other comments are allowed
      const [, kind, name, rest] = match;
      assert.match(name, METRIC_NAME, where);
      if (kind === "HELP") {
        assert.ok(!helps.has(name), `second HELP for ${name}: ${where}`);
        helps.add(name);
        assert.ok(!/\\[^\\n]/.test(rest), `bad escape in HELP: ${where}`);
      } else {
        assert.ok(TYPES.has(rest), `unknown type: ${where}`);
        assert.ok(!types.has(name), `second TYPE for ${name}: ${where}`);
        assert.ok(!finished.has(name) && current !== name, `TYPE after samples: ${where}`);
        types.set(name, rest);
      }
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$/.exec(line);
    assert.ok(match !== null, `not a sample: ${where}`);
    const [, name, labelText, valueText] = match;
    const labels = labelText === undefined ? {} : parseLabels(labelText.slice(1, -1), where);
    assert.ok(
      /^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|Inf)$|^NaN$/.test(valueText),
      `bad value: ${where}`,
    );
    const value = valueText.endsWith("Inf")
      ? (valueText.startsWith("-") ? -Infinity : Infinity)
      : Number(valueText);
    if (name !== current) {
      if (current !== undefined) finished.add(current);
      assert.ok(!finished.has(name), `samples of ${name} are not contiguous: ${where}`);
      current = name;
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `duplicate series: ${where}`);
    seen.add(key);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

function parseLabels(text: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest !== "") {
    const match = /^([^=]+)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest);
    assert.ok(match !== null, `bad labels: ${where}`);
    const [all, name, raw] = match;
    assert.match(name, LABEL_NAME, where);
    assert.ok(!(name in labels), `duplicate label ${name}: ${where}`);
    labels[name] = raw.replace(/\\(["\\n])/g, (_, c: string) => c === "n" ? "\n" : c);
    rest = rest.slice(all.length);
  }
  return labels;
}

/** The value of `name` for database `db` in a scrape (undefined when absent). */
function valueOf(samples: Sample[], name: string, db?: string): number | undefined {
  return samples.find((s) => s.name === name && (db === undefined || s.labels.db === db))?.value;
}

Deno.test("metrics: /metrics is Prometheus text; the lag rises while S3 is down and falls after", async () => {
  const server = await startS3Server({ buckets: ["sluice-metrics"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-metrics-" });
  let replicate: ReturnType<typeof startReplicate> | undefined;
  try {
    const dbPath = join(dir, "app.db");
    createDatabase(dbPath);
    const addr = `127.0.0.1:${freePort()}`;
    const configPath = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      configPath,
      [
        `addr: ${addr}`,
        "logging: { level: warn }",
        "dbs:",
        `  - path: ${dbPath}`,
        "    monitor-interval: 100ms",
        "    replica:",
        "      type: s3",
        "      bucket: sluice-metrics",
        "      path: app",
        `      endpoint: ${server.endpoint}`,
        "      region: us-east-1",
        "      force-path-style: true",
        "      sync-interval: 100ms",
        "",
      ].join("\n"),
    );
    replicate = startReplicate("-c", configPath);
    const scrape = async () => {
      const response = await fetch(`http://${addr}/metrics`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      return parseExposition(await response.text());
    };
    let last = { samples: [] as Sample[], types: new Map<string, string>() };
    const scrapeOK = async () => {
      try {
        last = await scrape();
        return true;
      } catch (err) {
        if (err instanceof TypeError) return false; // not listening yet
        throw err;
      }
    };
    await waitFor(
      "first upload in /metrics",
      async () =>
        await scrapeOK() && (valueOf(last.samples, "sluice_db_replica_txid", dbPath) ?? 0) >= 1,
      15_000,
    );

    // Every series the issue asks for, with the right type.
    const expected: Record<string, string> = {
      sluice_db_txid: "gauge",
      sluice_db_replica_txid: "gauge",
      sluice_db_wal_bytes: "gauge",
      sluice_db_last_sync_timestamp_seconds: "gauge",
      sluice_db_replication_lag_seconds: "gauge",
      sluice_db_syncs_total: "counter",
      sluice_db_sync_errors_total: "counter",
      sluice_db_checkpoints_total: "counter",
      sluice_db_checkpoint_errors_total: "counter",
      sluice_db_truncate_continued_total: "counter",
      sluice_db_truncate_snapshots_total: "counter",
      sluice_db_uploads_total: "counter",
      sluice_db_upload_errors_total: "counter",
      sluice_db_uploaded_bytes_total: "counter",
      sluice_db_compactions_total: "counter",
      sluice_db_snapshots_total: "counter",
      sluice_db_compaction_errors_total: "counter",
      sluice_databases: "gauge",
      sluice_event_loop_delay_seconds: "gauge",
      sluice_event_loop_delay_max_seconds: "gauge",
    };
    for (const [name, type] of Object.entries(expected)) {
      assert.equal(last.types.get(name), type, `TYPE of ${name}`);
      assert.ok(valueOf(last.samples, name) !== undefined, `a sample of ${name}`);
    }
    for (const [name, type] of last.types) {
      if (type === "counter") assert.match(name, /_total$/, `counter ${name} ends in _total`);
    }
    assert.equal(valueOf(last.samples, "sluice_databases"), 1);
    assert.equal(valueOf(last.samples, "sluice_db_replication_lag_seconds", dbPath), 0);
    assert.ok((valueOf(last.samples, "sluice_db_uploaded_bytes_total", dbPath) ?? 0) > 0);
    const syncedAt = valueOf(last.samples, "sluice_db_last_sync_timestamp_seconds", dbPath)!;
    assert.ok(Math.abs(syncedAt - Date.now() / 1000) < 60, "last sync time is now-ish");

    // The replica goes away while the application writes: the lag grows with time.
    await server.kill();
    await runWriter("--db", dbPath, "--rate", "0", "--count", "20");
    await waitFor("lag above 1 s", async () => {
      last = await scrape();
      return (valueOf(last.samples, "sluice_db_replication_lag_seconds", dbPath) ?? 0) > 1;
    }, 10_000);
    const lagDown = valueOf(last.samples, "sluice_db_replication_lag_seconds", dbPath)!;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    last = await scrape();
    const lagLater = valueOf(last.samples, "sluice_db_replication_lag_seconds", dbPath)!;
    assert.ok(lagLater >= lagDown + 1, `lag rises while S3 is down: ${lagDown} → ${lagLater}`);
    const txid = valueOf(last.samples, "sluice_db_txid", dbPath)!;
    assert.ok(txid > valueOf(last.samples, "sluice_db_replica_txid", dbPath)!, "replica behind");

    // Back: the pending files are shipped and the lag returns to zero.
    await server.restart();
    await waitFor("lag back to 0", async () => {
      last = await scrape();
      return valueOf(last.samples, "sluice_db_replication_lag_seconds", dbPath) === 0 &&
        valueOf(last.samples, "sluice_db_replica_txid", dbPath) ===
          valueOf(last.samples, "sluice_db_txid", dbPath);
    }, 20_000);
    assert.ok((valueOf(last.samples, "sluice_db_upload_errors_total", dbPath) ?? 0) >= 1);

    // /status tells the same, as JSON.
    const status = await (await fetch(`http://${addr}/status`)).json();
    assert.equal(status.pid, replicate.process.pid);
    assert.equal(status.databases.length, 1);
    assert.equal(status.databases[0].path, dbPath);
    assert.equal(status.databases[0].lagSeconds, 0);
    assert.equal(
      parseInt(status.databases[0].localTXID, 16),
      valueOf(last.samples, "sluice_db_txid", dbPath),
    );
    assert.equal(status.databases[0].replicaTXID, status.databases[0].localTXID);
    assert.ok(typeof status.databases[0].lastError === "string", "the outage left its error");
    assert.equal(
      await fetch(`http://${addr}/nope`).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      }),
      404,
    );

    const stopped = await replicate.stop();
    replicate = undefined;
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    await replicate?.stop("SIGKILL");
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("metrics: event-loop delay meter records lateness and forgets it after two windows", () => {
  let clock = 0;
  const monitor = new LoopDelayMonitor({ resolution: 100, window: 1000, now: () => clock });
  monitor.start();
  monitor.stop(); // driven by hand below
  clock = 100;
  monitor.record(clock);
  assert.equal(monitor.lastSeconds, 0);
  clock = 450; // due at 200: 250 ms late
  monitor.record(clock);
  assert.equal(monitor.lastSeconds, 0.25);
  assert.equal(monitor.maxSeconds, 0.25);
  clock = 1200; // next window: the previous maximum still counts
  monitor.record(clock);
  assert.equal(monitor.maxSeconds, 0.65);
  clock = 3500; // two windows later: forgotten
  assert.equal(monitor.maxSeconds, 0);
});

/**
 * A hand-driven delay meter (100 ms resolution, `idleResolution` after 500 ms without a stall)
 * that has ticked on time from 100 to 600 ms; `at(ms)` records a tick at that time.
 */
function quietMonitor(idleResolution: number): { monitor: LoopDelayMonitor; at(ms: number): void } {
  let clock = 0;
  const monitor = new LoopDelayMonitor({
    resolution: 100,
    idleResolution,
    idleAfter: 500,
    window: 60_000,
    now: () => clock,
  });
  monitor.start();
  monitor.stop(); // driven by hand
  const at = (ms: number) => monitor.record(clock = ms);
  for (let ms = 100; ms <= 600; ms += 100) at(ms);
  return { monitor, at };
}

Deno.test("metrics: the event-loop delay meter samples slowly after a quiet spell, finely after a late tick", () => {
  const { monitor, at } = quietMonitor(1000);
  // Quiet for 500 ms: the next tick is due a second later, so a tick then is on time.
  at(1600);
  assert.equal(monitor.lastSeconds, 0);
  at(2900); // due at 2600: 300 ms late, back to the fine resolution
  assert.equal(monitor.lastSeconds, 0.3);
  at(3100); // due at 3000 (100 ms after the late tick): 100 ms late
  assert.equal(monitor.lastSeconds, 0.1);
});

Deno.test("metrics: the event-loop delay meter keeps sampling slowly through a loaded machine's timer jitter", () => {
  const { monitor, at } = quietMonitor(5000);
  at(5630); // due at 5600: 30 ms late, a timer waiting for a CPU, not a stall
  assert.equal(monitor.lastSeconds, 0.03);
  at(10_630); // still sampled every 5 s: due at 10630, on time
  assert.equal(monitor.lastSeconds, 0);
  at(15_700); // due at 15630: 70 ms late, a stall: back to the fine resolution
  at(15_900); // due at 15800 (100 ms after the stall): 100 ms late
  assert.equal(monitor.lastSeconds, 0.1);
});

Deno.test("metrics: above per-database-limit only aggregates are exported, and they add up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-metrics-limit-" });
  let replicate: ReturnType<typeof startReplicate> | undefined;
  try {
    const tenants = join(dir, "tenants");
    await Deno.mkdir(tenants);
    const paths = ["a", "b", "c", "d", "e"].map((name) => join(tenants, `${name}.db`));
    for (const path of paths) createDatabase(path);
    const addr = `127.0.0.1:${freePort()}`;
    const configPath = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      configPath,
      [
        `addr: ${addr}`,
        "logging: { level: warn }",
        "metrics: { per-database: true, per-database-limit: 3 }",
        "dbs:",
        `  - dir: ${tenants}`,
        `    pattern: "*.db"`,
        "    watch: true",
        `    replica: { url: "file://${join(dir, "replica")}", sync-interval: 50ms }`,
        "",
      ].join("\n"),
    );
    replicate = startReplicate("-c", configPath);
    let last = { samples: [] as Sample[], types: new Map<string, string>() };
    const scrape = async () => {
      try {
        const response = await fetch(`http://${addr}/metrics`);
        last = parseExposition(await response.text());
        return true;
      } catch (err) {
        if (err instanceof TypeError) return false; // not listening yet
        throw err;
      }
    };
    const value = (name: string, labels: Record<string, string> = {}) =>
      last.samples.find((s) =>
        s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
      )?.value;
    await waitFor(
      "five databases uploaded and caught up",
      async () =>
        await scrape() && value("sluice_databases") === 5 &&
        (value("sluice_uploads_total") ?? 0) >= 5 &&
        value("sluice_replication_lag_seconds_bucket", { le: "0.1" }) === 5,
      20_000,
    );

    // No per-database series at all: 5 databases, limit 3.
    const perDB = last.samples.filter((s) => s.name.startsWith("sluice_db_"));
    assert.deepEqual(perDB, [], "no sluice_db_* samples above the limit");
    assert.ok(last.samples.every((s) => s.labels.db === undefined || s.name.includes("max")));

    // Databases by state: every state present, adding up to the databases replicated.
    const states = ["active", "parked", "opening", "failing"];
    for (const state of states) {
      assert.ok(value("sluice_databases_by_state", { state }) !== undefined, state);
    }
    const counted = ["active", "parked", "failing"]
      .reduce((sum, state) => sum + value("sluice_databases_by_state", { state })!, 0);
    assert.equal(counted, 5);
    assert.equal(value("sluice_databases_by_state", { state: "failing" }), 0);

    // The lag histogram: one observation per database, cumulative buckets.
    assert.equal(last.types.get("sluice_replication_lag_seconds"), "histogram");
    assert.equal(value("sluice_replication_lag_seconds_count"), 5);
    assert.equal(value("sluice_replication_lag_seconds_bucket", { le: "+Inf" }), 5);
    assert.equal(value("sluice_replication_lag_seconds_sum"), 0);
    const buckets = last.samples.filter((s) => s.name === "sluice_replication_lag_seconds_bucket")
      .map((s) => s.value);
    assert.deepEqual(buckets, [...buckets].sort((a, b) => a - b), "buckets are cumulative");

    // The worst lag names one database (all caught up: 0).
    const max = last.samples.filter((s) => s.name === "sluice_replication_lag_max_seconds");
    assert.equal(max.length, 1);
    assert.ok(paths.includes(max[0].labels.db), max[0].labels.db);
    assert.equal(max[0].value, 0);

    // Totals across databases: at least one sync and one upload each, bytes shipped.
    assert.equal(last.types.get("sluice_syncs_total"), "counter");
    assert.ok(value("sluice_syncs_total")! >= 5);
    assert.ok(value("sluice_uploaded_bytes_total")! > 0);
    assert.equal(value("sluice_sync_errors_total"), 0);
    assert.equal(value("sluice_upload_errors_total"), 0);

    // A commit to one tenant shows in the totals, never going down.
    const uploads = value("sluice_uploads_total")!;
    await runWriter("--db", paths[0], "--rate", "0", "--count", "3");
    await waitFor("the new commits uploaded", async () => {
      await scrape();
      return value("sluice_uploads_total")! > uploads &&
        value("sluice_replication_lag_seconds_sum") === 0;
    }, 10_000);

    const stopped = await replicate.stop();
    replicate = undefined;
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    await replicate?.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

/** A status row as the engine reports it, for the aggregation below. */
function row(i: number, lag: number, state?: DatabaseStatus["state"]): DatabaseStatus {
  return {
    path: `/tenants/${i}.db`,
    replica: `file:///replica/${i}.db`,
    localTXID: "0000000000000002",
    replicaTXID: "0000000000000001",
    lagSeconds: lag,
    walBytes: 4096,
    lastSyncAt: null,
    lastError: null,
    lastErrorAt: null,
    stalledSeconds: 0,
    stats: {
      syncs: 2,
      syncErrors: 0,
      checkpoints: 0,
      checkpointErrors: 0,
      truncationsContinued: 1,
      truncationsSnapshotted: 0,
      uploads: 3,
      uploadErrors: 1,
      bytesUploaded: 100,
    } as DatabaseStatus["stats"],
    compaction: { compactions: 1, snapshots: 1, filesDeleted: 0, errors: 0 },
    ...(state === undefined ? {} : { state }),
  };
}

Deno.test("metrics: 100,000 databases are aggregated in one cheap pass; totals never go down", async () => {
  const states = [undefined, "parked", "failing"] as const;
  let rows = Array.from(
    { length: 100_000 },
    (_, i) => row(i, i === 77 ? 42 : i % 2, states[i % 3]),
  );
  const metrics = new Metrics({ status: () => rows, version: "test", opening: () => 7 });
  try {
    const started = performance.now();
    const text = await metrics.text();
    const elapsed = performance.now() - started;
    const { samples } = parseExposition(text);
    assert.ok(samples.length < 100, `${samples.length} samples, not one per database`);
    assert.ok(!samples.some((s) => s.name.startsWith("sluice_db_")));
    assert.ok(elapsed < 2000, `one scrape took ${elapsed} ms`);
    const value = (name: string, labels: Record<string, string> = {}) =>
      samples.find((s) =>
        s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
      )?.value;
    assert.equal(value("sluice_databases"), 100_000);
    assert.equal(value("sluice_databases_by_state", { state: "active" }), 33_334);
    assert.equal(value("sluice_databases_by_state", { state: "parked" }), 33_333);
    assert.equal(value("sluice_databases_by_state", { state: "failing" }), 33_333);
    assert.equal(value("sluice_databases_by_state", { state: "opening" }), 7);
    assert.equal(value("sluice_replication_lag_seconds_bucket", { le: "0.1" }), 50_000);
    assert.equal(value("sluice_replication_lag_seconds_bucket", { le: "1" }), 99_999);
    assert.equal(value("sluice_replication_lag_seconds_bucket", { le: "30" }), 99_999);
    assert.equal(value("sluice_replication_lag_seconds_bucket", { le: "60" }), 100_000);
    assert.equal(value("sluice_replication_lag_seconds_count"), 100_000);
    assert.equal(value("sluice_replication_lag_seconds_sum"), 49_999 + 42);
    assert.equal(value("sluice_replication_lag_max_seconds", { db: "/tenants/77.db" }), 42);
    assert.equal(value("sluice_syncs_total"), 200_000);
    assert.equal(value("sluice_upload_errors_total"), 100_000);
    assert.equal(value("sluice_uploaded_bytes_total"), 10_000_000);
    assert.equal(value("sluice_snapshots_total"), 100_000);

    // Half the tenants removed: the totals keep what they counted.
    rows = rows.slice(0, 50_000);
    const after = parseExposition(await metrics.text()).samples;
    assert.equal(after.find((s) => s.name === "sluice_syncs_total")?.value, 200_000);
    assert.equal(after.find((s) => s.name === "sluice_databases")?.value, 50_000);

    // Few databases: per-database series again, unless turned off.
    rows = rows.slice(0, 2);
    const few = parseExposition(await metrics.text()).samples;
    assert.equal(few.filter((s) => s.name === "sluice_db_txid").length, 2);
    const off = new Metrics({ status: () => rows, version: "test", perDatabase: false });
    try {
      const none = parseExposition(await off.text()).samples;
      assert.ok(!none.some((s) => s.name.startsWith("sluice_db_")));
      assert.equal(none.find((s) => s.name === "sluice_databases")?.value, 2);
    } finally {
      off.close();
    }
  } finally {
    metrics.close();
  }
});
