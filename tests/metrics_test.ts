/**
 * `/metrics` and `/status` of a real `sluice replicate` on `addr:`, replicating to a real S3
 * server process (fauxqs): the exposition parses as Prometheus text (checked line by line by the
 * strict parser below), and the replication lag rises while the S3 server is down and returns to
 * zero once it is back. Plus the event-loop delay meter on a driven clock.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, freePort, runWriter, startReplicate, waitFor } from "./_sluice.ts";
import { FAUXQS_CREDENTIALS, startS3Server } from "./_s3.ts";
import { LoopDelayMonitor } from "../src/daemon/mod.ts";

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
