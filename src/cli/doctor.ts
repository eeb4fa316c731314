/**
 * `sluice doctor [-c FILE] [--json] [REPLICA_URL]`: checks the storage of one replica URL, or
 * of every distinct replica in the config, and prints one line per check (or JSON). Exit 0
 * when every check replication needs passed, 1 otherwise, 2 for usage and config errors.
 *
 * @module
 */

import { loadCommandConfig, parseDoctorArgs } from "./args.ts";
import { parseReplicaURL, replicaLocationKey, type ReplicaSpec } from "../config/mod.ts";
import { type DoctorReport, formatReport, runDoctor } from "../doctor/mod.ts";

/** Runs the command; resolves to the exit code. */
export async function run(args: string[]): Promise<number> {
  const options = parseDoctorArgs(args);
  const specs = options.replicaURL !== undefined ? [parseReplicaURL(options.replicaURL)] : distinct(
    (await loadCommandConfig({ config: options.config })).dbs.map((db) => db.replica.spec),
  );
  const reports: DoctorReport[] = [];
  for (const spec of specs) {
    const report = await runDoctor(spec);
    reports.push(report);
    if (!options.json) console.log(formatReport(report));
  }
  const ok = reports.every((report) => report.ok);
  if (options.json) console.log(JSON.stringify({ ok, replicas: reports }, null, 2));
  return ok ? 0 : 1;
}

/** The specs with duplicates (same storage location) removed, in order. */
function distinct(specs: ReplicaSpec[]): ReplicaSpec[] {
  const seen = new Map<string, ReplicaSpec>();
  for (const spec of specs) {
    const key = replicaLocationKey(spec);
    if (!seen.has(key)) seen.set(key, spec);
  }
  return [...seen.values()];
}
