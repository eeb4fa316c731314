/**
 * `sluice verify [-c FILE] [--restore] [--json] DB_PATH|REPLICA_URL`: prove that a replica is
 * intact and restorable without changing it (for cron). Exit 0 when everything restorable is
 * intact, 1 when something is damaged or missing (the report names the files and TXIDs).
 *
 * @module
 */

import { formatTXID } from "../ltx/mod.ts";
import {
  AgeReplicaClient,
  createReplicaClient,
  type ReplicaClient,
  replicaContent,
  ReplicaError,
} from "../replica/mod.ts";
import { type VerifyPhase, verifyReplica, type VerifyReport } from "../verify/mod.ts";
import { parseVerifyArgs } from "./args.ts";
import { resolveSource, withAgeIdentities } from "./restore.ts";

/**
 * Runs the command; resolves to the exit code.
 * @throws {UsageError} | {ConfigError} for the user's mistakes (exit 2), anything else when the
 * replica cannot be listed (exit 1); `src/cli/mod.ts` prints them.
 */
export async function run(args: string[]): Promise<number> {
  const options = parseVerifyArgs(args);
  const source = await resolveSource(options.source, options.config);
  source.spec = await withAgeIdentities(source.spec, options.ageIdentityFiles);
  const controller = new AbortController();
  const onSignal = () => controller.abort(new Error("verify interrupted"));
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const client = createReplicaClient(source.spec);
  const progress = progressReporter();
  let report: VerifyReport;
  try {
    await refuseEncryptedWithoutIdentity(client);
    report = await verifyReplica(client, {
      expectedDB: source.dbPath,
      restore: options.restore,
      onProgress: progress.update,
      signal: controller.signal,
    });
  } finally {
    progress.done();
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
    await client.close();
  }
  console.log(options.json ? JSON.stringify(toJSON(report)) : formatReport(report));
  return report.ok ? 0 : 1;
}

/**
 * Without an identity every file of an age-encrypted replica would be reported damaged: say
 * what is missing instead.
 * @throws {ReplicaError} naming the fix.
 */
async function refuseEncryptedWithoutIdentity(client: ReplicaClient): Promise<void> {
  if (client instanceof AgeReplicaClient) return;
  if (await replicaContent(client) !== "encrypted") return;
  throw new ReplicaError(
    `replica ${client.location} is encrypted with age and no identity was given; pass ` +
      `--age-identity FILE (or set age.identities in the config); nothing was verified`,
  );
}

/** The report with TXIDs as 16 hex digits and times as RFC 3339, for `--json`. */
export function toJSON(report: VerifyReport): Record<string, unknown> {
  const txid = (n: number | undefined) => n === undefined ? undefined : formatTXID(n);
  return {
    ok: report.ok,
    location: report.location,
    owner: report.owner ?? null,
    pageSize: report.pageSize ?? null,
    files: report.files,
    bytes: report.bytes,
    latestTXID: formatTXID(report.latestTXID),
    range: report.range === undefined ? null : {
      fromTXID: formatTXID(report.range.fromTXID),
      fromTime: report.range.fromTime.toISOString(),
      toTXID: formatTXID(report.range.toTXID),
      toTime: report.range.toTime.toISOString(),
    },
    levels: report.levels.map((l) => ({
      ...l,
      minTXID: formatTXID(l.minTXID),
      maxTXID: formatTXID(l.maxTXID),
    })),
    restore: report.restore === undefined
      ? null
      : { ...report.restore, txid: formatTXID(report.restore.txid) },
    problems: report.problems.map((p) => ({
      ...p,
      fromTXID: txid(p.fromTXID),
      toTXID: txid(p.toTXID),
    })),
    notes: report.notes,
    durationMs: report.durationMs,
  };
}

/** The report for people: a table per level, the range, then every problem on its own line. */
export function formatReport(report: VerifyReport): string {
  const lines = [
    `replica ${report.location}` + (report.owner === undefined ? "" : ` (owner ${report.owner})`),
    "",
  ];
  const header = ["LEVEL", "FILES", "BYTES", "MIN_TXID", "MAX_TXID", "DAMAGED"];
  const rows = report.levels.map((l) => [
    String(l.level),
    String(l.files),
    String(l.bytes),
    formatTXID(l.minTXID),
    formatTXID(l.maxTXID),
    String(l.damaged),
  ]);
  const right = [true, true, true, false, false, true];
  const widths = header.map((title, c) => Math.max(title.length, ...rows.map((r) => r[c].length)));
  for (const row of [header, ...rows]) {
    lines.push(
      row.map((cell, c) => right[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))
        .join("  ").trimEnd(),
    );
  }
  lines.push("");
  const range = report.range;
  lines.push(
    range === undefined
      ? "restorable: nothing"
      : `restorable: TXID ${formatTXID(range.fromTXID)} (${range.fromTime.toISOString()}) to ` +
        `${formatTXID(range.toTXID)} (${range.toTime.toISOString()})`,
  );
  if (report.restore !== undefined) {
    lines.push(
      `test restore: TXID ${formatTXID(report.restore.txid)}, ${report.restore.bytes} bytes, ` +
        `integrity_check ok (${report.restore.durationMs} ms)`,
    );
  }
  for (const note of report.notes) lines.push(`note: ${note}`);
  for (const problem of report.problems) lines.push(`${problem.kind}: ${problem.message}`);
  const mib = (report.bytes / (1 << 20)).toFixed(1);
  lines.push(
    report.ok
      ? `OK: ${report.files} files (${mib} MiB) intact in ${report.durationMs} ms`
      : `FAILED: ${report.problems.length} problem${report.problems.length === 1 ? "" : "s"} ` +
        `in ${report.files} files (${mib} MiB)`,
  );
  return lines.join("\n");
}

/** Progress on stderr when it is a terminal; redraws at most 5 times a second. */
function progressReporter(): {
  update?: (phase: VerifyPhase, done: number, total: number) => void;
  done: () => void;
} {
  if (!Deno.stderr.isTerminal()) return { done: () => {} };
  const encoder = new TextEncoder();
  let shown = false;
  let last = 0;
  return {
    update(phase, done, total) {
      const now = performance.now();
      if (done < total && now - last < 200) return;
      last = now;
      shown = true;
      const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
      const mib = (n: number) => (n / (1 << 20)).toFixed(0);
      const what = phase === "read" ? "reading" : "test restore";
      Deno.stderr.writeSync(
        encoder.encode(`\r${what}: ${percent}% (${mib(done)} of ${mib(total)} MiB)   `),
      );
    },
    done() {
      if (shown) Deno.stderr.writeSync(encoder.encode("\n"));
    },
  };
}
