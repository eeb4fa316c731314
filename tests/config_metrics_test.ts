/**
 * The `metrics:` section: defaults, values, and malformed values rejected with one line naming
 * `file:line` (through the real CLI too: exit 2).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, configFromArgs, parseConfig } from "../src/config/mod.ts";
import { sluice } from "./_sluice.ts";

const MIN = "dbs:\n  - path: /data/app.db\n    replica: { path: /backups/app }\n";

function errorOf(text: string): string {
  try {
    parseConfig(text, { file: "sluice.yml", baseDir: "/srv" });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
    return err.message;
  }
  assert.fail(`expected a ConfigError for:\n${text}`);
}

Deno.test("config metrics: defaults are per-database series for up to 100 databases", () => {
  const config = parseConfig(MIN, { file: "sluice.yml", baseDir: "/srv" });
  assert.deepEqual(config.metrics, { perDatabase: true, perDatabaseLimit: 100 });
  assert.deepEqual(configFromArgs("/data/app.db", "file:///backups/app").metrics, {
    perDatabase: true,
    perDatabaseLimit: 100,
  });
});

Deno.test("config metrics: per-database and per-database-limit are read", () => {
  const off = parseConfig(`metrics: { per-database: false }\n${MIN}`, { baseDir: "/srv" });
  assert.deepEqual(off.metrics, { perDatabase: false, perDatabaseLimit: 100 });
  const limit = parseConfig(`metrics:\n  per-database-limit: 0\n${MIN}`, { baseDir: "/srv" });
  assert.deepEqual(limit.metrics, { perDatabase: true, perDatabaseLimit: 0 });
  const both = parseConfig(
    `metrics: { per-database: true, per-database-limit: 5000 }\n${MIN}`,
    { baseDir: "/srv" },
  );
  assert.deepEqual(both.metrics, { perDatabase: true, perDatabaseLimit: 5000 });
});

Deno.test("config metrics: malformed values name the file, the line and the key", () => {
  const cases: [string, RegExp][] = [
    [`metrics: true\n${MIN}`, /^sluice\.yml:1: metrics: expected a mapping, got true$/],
    [
      `metrics: { per-database: yes }\n${MIN}`,
      /^sluice\.yml:1: metrics\.per-database: expected true or false, got "yes"$/,
    ],
    [
      `metrics:\n  per-database-limit: -1\n${MIN}`,
      /^sluice\.yml:2: metrics\.per-database-limit: must be at least 0, got -1$/,
    ],
    [
      `metrics:\n  per-database-limit: 1.5\n${MIN}`,
      /^sluice\.yml:2: metrics\.per-database-limit: expected a whole number, got 1\.5$/,
    ],
    [
      `metrics:\n  per-database-limit: lots\n${MIN}`,
      /^sluice\.yml:2: metrics\.per-database-limit: expected a whole number, got "lots"$/,
    ],
    [`metrics:\n  per-db: false\n${MIN}`, /^sluice\.yml:2: unknown key "per-db" in metrics/],
    [`per-database-limit: 5\n${MIN}`, /^sluice\.yml:1: .*per-database-limit.*metrics/],
  ];
  for (const [text, expected] of cases) assert.match(errorOf(text), expected, text);
});

Deno.test("config metrics: sluice replicate refuses a bad metrics section with exit 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-config-metrics-" });
  try {
    const path = join(dir, "bad.yml");
    await Deno.writeTextFile(
      path,
      `addr: 127.0.0.1:0\nmetrics:\n  per-database-limit: many\n` +
        `dbs:\n  - path: ${dir}/app.db\n    replica: { path: ${dir}/replica }\n`,
    );
    const result = await sluice("replicate", "-c", path);
    assert.equal(result.code, 2, result.stderr);
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], /bad\.yml:3: metrics\.per-database-limit: expected a whole number/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
