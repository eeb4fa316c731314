/**
 * Malformed configs, through the real CLI: every key of a complete config given a value of the
 * wrong type (and bad durations, numbers, enums, URLs), unknown keys at every level, and
 * broken YAML. `sluice replicate -c bad.yml` must exit 2 with exactly one line on stderr that
 * names the file and the line of the culprit.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { sluice } from "./_sluice.ts";

/** A complete, valid config (checked below); `DIR` is replaced by a temp directory. */
const BASE = `addr: 127.0.0.1:0
logging:
  level: info
  type: text
snapshot:
  interval: 24h
  retention: 24h
levels:
  - interval: 30s
l0-retention: 5m
retention:
  enabled: true
exec: "true"
dbs:
  - path: DIR/app.db
    meta-path: DIR/meta
    monitor-interval: 1s
    checkpoint-interval: 1m
    min-checkpoint-page-count: 1000
    truncate-page-n: 121359
    busy-timeout: 1s
    replica:
      url: file://DIR/replica
      sync-interval: 1s
      encoding: frame
  - dir: DIR/tenants
    pattern: "*.db"
    recursive: true
    watch: true
    replica:
      type: s3
      bucket: backups
      path: tenants
      region: us-east-1
      endpoint: http://127.0.0.1:4566
      force-path-style: true
      access-key-id: abc
      secret-access-key: s3cr3tv4lue
      part-size: 5MiB
`;

const LINES = BASE.split("\n");

/** 1-based line of `key:` (the first at or after line `from`). */
function lineOf(key: string, from = 1): number {
  const i = LINES.findIndex((l, n) => n >= from - 1 && new RegExp(`^[ -]*${key}:`).test(l));
  if (i < 0) throw new Error(`no ${key} in BASE`);
  return i + 1;
}

/** BASE with the value on `line` replaced (a parent key loses its children). */
function withValue(line: number, value: string): string {
  const lines = [...LINES];
  lines[line - 1] = lines[line - 1].replace(/:.*$/, `: ${value}`);
  const indent = (l: string) => l.length - l.trimStart().replace(/^- /, "").length;
  const own = indent(LINES[line - 1]);
  let end = line;
  while (end < lines.length && lines[end].trim() !== "" && indent(lines[end]) > own) end++;
  lines.splice(line, end - line);
  return lines.join("\n");
}

/** BASE with `text` inserted as a new line `line` (indented like the line before it). */
function withLine(line: number, text: string): string {
  const lines = [...LINES];
  lines.splice(line - 1, 0, text);
  return lines.join("\n");
}

interface Case {
  what: string;
  yaml: string;
  line: number;
}

const cases: Case[] = [];
const wrongType = "{ a: 1 }";
const keyLines: [string, number][] = [
  ["addr", lineOf("addr")],
  ["logging", lineOf("logging")],
  ["logging.level", lineOf("level")],
  ["logging.type", lineOf("type")],
  ["snapshot", lineOf("snapshot")],
  ["snapshot.interval", lineOf("interval", lineOf("snapshot"))],
  ["snapshot.retention", lineOf("retention", lineOf("snapshot"))],
  ["levels", lineOf("levels")],
  ["levels[0].interval", lineOf("interval", lineOf("levels"))],
  ["l0-retention", lineOf("l0-retention")],
  ["retention", lineOf("retention", lineOf("l0-retention") + 1)],
  ["retention.enabled", lineOf("enabled")],
  ["exec", lineOf("exec")],
  ["dbs", lineOf("dbs")],
  ["dbs[0].path", lineOf("path", lineOf("dbs"))],
  ["meta-path", lineOf("meta-path")],
  ["monitor-interval", lineOf("monitor-interval")],
  ["checkpoint-interval", lineOf("checkpoint-interval")],
  ["min-checkpoint-page-count", lineOf("min-checkpoint-page-count")],
  ["truncate-page-n", lineOf("truncate-page-n")],
  ["busy-timeout", lineOf("busy-timeout")],
  ["replica", lineOf("replica")],
  ["replica.url", lineOf("url")],
  ["sync-interval", lineOf("sync-interval")],
  ["encoding", lineOf("encoding")],
  ["dir", lineOf("dir")],
  ["pattern", lineOf("pattern")],
  ["recursive", lineOf("recursive")],
  ["watch", lineOf("watch")],
  ["s3 type", lineOf("type", lineOf("dir"))],
  ["bucket", lineOf("bucket")],
  ["s3 path", lineOf("path", lineOf("bucket"))],
  ["region", lineOf("region")],
  ["endpoint", lineOf("endpoint")],
  ["force-path-style", lineOf("force-path-style")],
  ["access-key-id", lineOf("access-key-id")],
  ["secret-access-key", lineOf("secret-access-key")],
  ["part-size", lineOf("part-size")],
];
for (const [key, line] of keyLines) {
  cases.push({ what: `${key}: a map`, yaml: withValue(line, wrongType), line });
}
// Scalars where a list or map is needed, and wrong scalars of every kind.
const badScalars: [string, string, string][] = [
  ["levels", "30s", "a scalar for a list"],
  ["dbs", "app.db", "a scalar for a list"],
  ["snapshot.interval", "soon", "not a duration"],
  ["snapshot.retention", "-1h", "negative duration"],
  ["levels[0].interval", "1 day", "duration with a space"],
  ["l0-retention", "10", "duration without a unit"],
  ["monitor-interval", "1x", "unknown unit"],
  ["checkpoint-interval", "[1m]", "a list"],
  ["busy-timeout", "1.5.5s", "malformed number"],
  ["sync-interval", "true", "a boolean"],
  ["min-checkpoint-page-count", "many", "not an integer"],
  ["min-checkpoint-page-count", "1.5", "a fraction"],
  ["truncate-page-n", "-5", "negative"],
  ["logging.level", "loud", "unknown level"],
  ["logging.type", "xml", "unknown log type"],
  ["encoding", "gzip", "unknown encoding"],
  ["retention.enabled", "yes please", "not a boolean"],
  ["recursive", "1", "a number for a boolean"],
  ["force-path-style", "sometimes", "not a boolean"],
  ["replica.url", "ftp://host/path", "unsupported scheme"],
  ["replica.url", "s3://", "S3 URL without a bucket"],
  ["replica.url", "http://[::1", "unparseable URL"],
  ["endpoint", "not a url", "bad endpoint"],
  ["endpoint", "ftp://127.0.0.1:4566", "endpoint scheme"],
  ["s3 type", "gcs", "unsupported backend"],
  ["part-size", "1MiB", "below the 5 MiB minimum"],
  ["part-size", "lots", "not a size"],
  ["addr", "nowhere", "no port"],
  ["pattern", '"[.db"', "bad glob"],
];
for (const [key, value, why] of badScalars) {
  const line = keyLines.find(([k]) => k === key)![1];
  cases.push({ what: `${key}: ${value} (${why})`, yaml: withValue(line, value), line });
}
// Unknown keys at every level, each on its own new line.
const unknown: [number, string][] = [
  [1, "colour: blue"],
  [lineOf("level") + 1, "  colour: blue"],
  [lineOf("interval", lineOf("snapshot")) + 1, "  colour: blue"],
  [lineOf("interval", lineOf("levels")) + 1, "    colour: blue"],
  [lineOf("enabled") + 1, "  colour: blue"],
  [lineOf("meta-path") + 1, "    colour: blue"],
  [lineOf("url") + 1, "      colour: blue"],
  [lineOf("bucket") + 1, "      colour: blue"],
  [lineOf("url") + 1, "      age-recipients: x"], // a Litestream key sluice does not implement
];
for (const [line, text] of unknown) {
  cases.push({ what: `unknown key "${text.trim()}"`, yaml: withLine(line, text), line });
}
// Environment expansion and YAML syntax.
cases.push({
  what: "unset ${VAR}",
  yaml: withValue(lineOf("bucket"), "${SLUICE_TEST_UNSET_VARIABLE}"),
  line: lineOf("bucket"),
});
cases.push({ what: "a tab in the indentation", yaml: withLine(4, "\tlevel: info"), line: 4 });
cases.push({
  what: "unclosed quote",
  yaml: withValue(lineOf("exec"), '"ls'),
  line: lineOf("exec"),
});
cases.push({
  what: "duplicate key",
  yaml: withLine(lineOf("addr") + 1, "addr: 127.0.0.1:9091"),
  line: lineOf("addr") + 1,
});

async function check(dir: string, c: Case, index: number): Promise<string | undefined> {
  const path = join(dir, `bad-${index}.yml`);
  await Deno.writeTextFile(path, c.yaml.replaceAll("DIR", dir));
  const result = await sluice("replicate", "-c", path);
  const stderr = result.stderr.trim();
  const problems: string[] = [];
  if (result.code !== 2) problems.push(`exit ${result.code}`);
  if (stderr.split("\n").length !== 1) problems.push(`${stderr.split("\n").length} lines`);
  if (!stderr.includes(`${path}:${c.line}`)) problems.push(`no ${path}:${c.line}`);
  if (stderr.includes("s3cr3tv4lue")) problems.push("leaks the secret");
  return problems.length ? `${c.what}: ${problems.join(", ")}: ${stderr}` : undefined;
}

Deno.test("config: the base config is valid (so each case below breaks exactly one thing)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-badcfg-" });
  try {
    await Deno.mkdir(join(dir, "tenants"));
    const path = join(dir, "base.yml");
    await Deno.writeTextFile(path, BASE.replaceAll("DIR", dir));
    const result = await sluice("databases", "-c", path);
    assert.equal(result.code, 0, result.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`config: ${cases.length} malformed configs → exit 2, one line with file:line`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-badcfg-" });
  try {
    await Deno.mkdir(join(dir, "tenants"));
    const failures: string[] = [];
    // A few at a time: each case is a process start.
    for (let i = 0; i < cases.length; i += 4) {
      const batch = cases.slice(i, i + 4).map((c, j) => check(dir, c, i + j));
      for (const problem of await Promise.all(batch)) if (problem) failures.push(problem);
    }
    assert.deepEqual(
      failures,
      [],
      `${failures.length} of ${cases.length} cases:\n${failures.join("\n")}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
