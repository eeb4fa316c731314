/**
 * `sluice doctor`: checks a replica's storage the way an operator would before trusting it,
 * and says how to fix what fails.
 *
 * Every backend gets the generic probe through the {@linkcode ReplicaClient} interface: put,
 * get, ranged get, list and delete of one small file at `<replica path>/.sluice-doctor-<random>/`
 * (a name no LTX level or restore ever looks at, so existing replica files are never touched),
 * always cleaned up. Backends add their own checks as {@linkcode BackendChecks} hooks: S3
 * (credentials and their source, bucket, provider profile, conditional writes, checksum headers,
 * multipart, clock skew) and directories (creatable, fsync, rename, free space).
 *
 * ```ts
 * import { formatReport, runDoctor } from "./src/doctor/mod.ts";
 * const report = await runDoctor({ type: "file", path: "/backups/app" });
 * console.log(formatReport(report)); // exit 1 when !report.ok
 * ```
 *
 * @module
 */

import { posix } from "node:path";
import {
  createReplicaClient,
  GCS_ENDPOINT,
  type LTXFileId,
  NotFoundError,
  type ReplicaSpec,
} from "../replica/mod.ts";
import { formatReplicaLocation } from "../config/mod.ts";
import type { BackendChecks, DoctorContext } from "./_context.ts";
import { CheckFailure, Checklist, type DoctorReport } from "./_report.ts";
import { fileChecks } from "./_file.ts";
import { s3Checks } from "./_s3.ts";

export type { BackendChecks, DoctorContext } from "./_context.ts";
export { type CheckResult, type CheckStatus, type DoctorReport, formatReport } from "./_report.ts";

/** Prefix of the probe directory; the rest is random per run. */
export const PROBE_PREFIX = ".sluice-doctor-";
/** Size of the probe file: small, but more than one read chunk of most servers. */
const PROBE_SIZE = 64 * 1024;

/** Backend-specific checks by spec type; other backends get the generic probe only. */
const BACKENDS: Record<string, BackendChecks> = { file: fileChecks, s3: s3Checks };

/** Options of {@linkcode runDoctor}. */
export interface DoctorOptions {
  /** Environment used to describe where credentials come from. Default: the process's. */
  env?: Record<string, string>;
  /** Extra checks for a backend type, replacing the built-in ones (for new backends). */
  backendChecks?: BackendChecks;
}

/**
 * Checks one replica location. Never throws for a storage problem: every problem is a failed
 * line of the report.
 * @throws {RangeError} when the spec has no path to put the probe under.
 */
export async function runDoctor(
  spec: ReplicaSpec,
  options: DoctorOptions = {},
): Promise<DoctorReport> {
  const checks = new Checklist();
  const probeName = PROBE_PREFIX + randomHex(8);
  const probeSpec = probeSpecFor(spec, probeName);
  const probeBytes = probeContent();
  const probeFile: LTXFileId = { level: 0, minTXID: 1, maxTXID: 1 };
  const probe = createReplicaClient(probeSpec);
  const ctx: DoctorContext = {
    spec,
    probeSpec,
    probe,
    probeName,
    probeFile,
    probeBytes,
    checks,
    env: options.env ?? envObject(),
  };
  const backend = options.backendChecks ?? BACKENDS[spec.type] ?? {};
  /** Runs one generic check, letting the backend explain its errors. */
  const generic = (
    name: string,
    blocking: boolean,
    check: () => Promise<{ detail: string }>,
  ) =>
    checks.run(name, { required: true, blocking }, async () => {
      try {
        return await check();
      } catch (err) {
        if (err instanceof CheckFailure) throw err;
        throw backend.explain?.(err, ctx) ?? err;
      }
    });
  let attempted = false; // even a failed write may leave something to clean up
  try {
    await backend.before?.(ctx);
    await generic("put", true, async () => {
      attempted = true;
      await probe.writeLTXFile(probeFile, probeBytes, Date.now());
      return { detail: `wrote ${probeBytes.length} bytes to ${probe.location}/` };
    });
    await generic("get", false, async () => {
      const bytes = await readAll(await probe.openLTXFile(probeFile));
      assertSame(bytes, probeBytes, "read back");
      return { detail: `read ${bytes.length} bytes back, identical` };
    });
    await generic("ranged get", false, async () => {
      const offset = 1000, length = 3000;
      const bytes = await readAll(await probe.openLTXFile(probeFile, { offset, length }));
      assertSame(bytes, probeBytes.subarray(offset, offset + length), "ranged read");
      return { detail: `bytes ${offset}-${offset + length - 1} identical` };
    });
    await generic("list", false, async () => {
      const found = [];
      for await (const info of probe.ltxFiles(probeFile.level)) found.push(info);
      if (found.length !== 1 || found[0].size !== probeBytes.length) {
        throw new CheckFailure(
          `listing shows ${found.length} file(s)` +
            (found.length === 1 ? ` of ${found[0].size} bytes` : "") +
            `, expected the probe (${probeBytes.length} bytes)`,
          "the store's listing is not consistent with its writes; sluice's retention and " +
            "restore depend on it",
        );
      }
      return { detail: "the probe is listed with its size" };
    });
    await backend.withProbe?.(ctx);
    await generic("delete", false, async () => {
      await probe.deleteLTXFiles([probeFile]);
      try {
        await (await probe.openLTXFile(probeFile)).cancel();
      } catch (err) {
        if (err instanceof NotFoundError) return { detail: "deleted; reading it is not found" };
        throw err;
      }
      throw new CheckFailure(
        "the probe is still readable after delete",
        "retention relies on deletes taking effect",
      );
    });
    await backend.after?.(ctx);
  } finally {
    await cleanUp(ctx, backend, attempted);
  }
  return {
    location: safeLocation(spec),
    type: spec.type,
    ok: !checks.results.some((check) => check.status === "fail"),
    checks: checks.results,
  };
}

/** Removes the probe file, the probe path and whatever the backend's checks created. */
async function cleanUp(ctx: DoctorContext, backend: BackendChecks, wrote: boolean): Promise<void> {
  const problems: string[] = [];
  if (wrote) {
    await ctx.probe.deleteLTXFiles([ctx.probeFile]).catch((err) => problems.push(err.message));
    await ctx.probe.deleteAll().catch((err) => problems.push(err.message));
  }
  await backend.cleanup?.(ctx).catch((err) => problems.push(err.message));
  await ctx.probe.close().catch(() => {});
  if (problems.length > 0) {
    ctx.checks.add({
      name: "cleanup",
      status: "warn",
      required: false,
      detail: `probe not fully removed: ${problems.join("; ")}`,
      fix: `delete ${ctx.probe.location} by hand`,
    });
  }
}

/** The same storage with the path extended by `name`; without encryption (the probe is not LTX). */
function probeSpecFor(spec: ReplicaSpec, name: string): ReplicaSpec {
  const path = (spec as { path?: unknown }).path;
  if (typeof path !== "string") {
    throw new RangeError(`sluice doctor cannot place a probe in a ${spec.type} replica`);
  }
  const { age: _age, ...plain } = spec as ReplicaSpec & { age?: unknown };
  const joined = path === "" ? name : posix.join(path, name);
  return { ...plain, path: joined } as ReplicaSpec;
}

function safeLocation(spec: ReplicaSpec): string {
  const s3 = spec as { provider?: string; bucket?: string; path?: string; endpoint?: string };
  if (spec.type === "s3" && s3.provider === "gcs" && s3.endpoint === GCS_ENDPOINT) {
    return `gs://${s3.bucket}${s3.path ? `/${s3.path}` : ""}`;
  }
  try {
    return formatReplicaLocation(spec);
  } catch {
    return spec.type;
  }
}

function probeContent(): Uint8Array {
  const bytes = new Uint8Array(PROBE_SIZE);
  crypto.getRandomValues(bytes); // 64 KiB: the getRandomValues limit
  return bytes;
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function assertSame(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) {
    throw new CheckFailure(
      `${what} returned ${actual.length} bytes, expected ${expected.length}`,
      "the store or a proxy in between alters objects (compression, truncation?)",
    );
  }
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new CheckFailure(
        `${what} differs from what was written at byte ${i}`,
        "the store or a proxy in between alters objects",
      );
    }
  }
}

function envObject(): Record<string, string> {
  try {
    return Deno.env.toObject();
  } catch {
    return {};
  }
}
