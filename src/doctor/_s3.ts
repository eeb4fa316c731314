/**
 * S3 checks beyond the generic probe: where the credentials come from, whether the bucket
 * exists, whether the profile fits the endpoint, conditional-write enforcement, checksum-header
 * acceptance, multipart uploads and the server's clock. Every request goes through the same SDK
 * client, with the same provider profile, that replication would use.
 *
 * @module
 */

import type { S3Client } from "@aws-sdk/client-s3";
import { detectProvider, type S3Profile, S3ReplicaClient } from "../replica/mod.ts";
import type { BackendChecks, DoctorContext } from "./_context.ts";
import { CheckFailure } from "./_report.ts";

/** Skew above which a warning is shown (SigV4 tolerates 15 minutes, LTX timestamps less). */
const SKEW_WARN_MS = 5_000;
/** AWS rejects requests whose signature time is off by more than 15 minutes. */
const SKEW_FAIL_MS = 15 * 60_000;
/** S3's part-count limit of one multipart upload. */
const MAX_PARTS = 10_000;

type SDK = Awaited<ReturnType<S3ReplicaClient["sdkClient"]>>["sdk"];

interface S3State {
  replica: S3ReplicaClient;
  client: S3Client;
  sdk: SDK;
  /** Server `Date` minus the local midpoint of each response's request, ms. */
  skews: number[];
  /** Keys written by the checks (besides the probe file), deleted in cleanup. */
  extraKeys: Set<string>;
  pendingUpload?: { key: string; uploadId: string };
}

const states = new WeakMap<DoctorContext, S3State>();

/** The S3 hooks. */
export const s3Checks: BackendChecks = {
  async before(ctx) {
    const replica = ctx.probe instanceof S3ReplicaClient
      ? ctx.probe
      : new S3ReplicaClient(ctx.probeSpec as ConstructorParameters<typeof S3ReplicaClient>[0]);
    const { client, sdk } = await replica.sdkClient();
    const state: S3State = { replica, client, sdk, skews: [], extraKeys: new Set() };
    states.set(ctx, state);
    recordServerDates(client, state.skews);

    await ctx.checks.run(
      "profile",
      { required: false },
      () => Promise.resolve(profileLine(replica)),
    );
    await ctx.checks.run(
      "credentials",
      { required: true, blocking: true },
      () => credentialsLine(ctx, state),
    );
    await ctx.checks.run("bucket", { required: true, blocking: true }, async () => {
      try {
        await client.send(new sdk.HeadBucketCommand({ Bucket: replica.bucket }));
      } catch (err) {
        throw s3Failure(err, replica, `bucket "${replica.bucket}"`);
      }
      return { detail: `"${replica.bucket}" exists at ${replica.endpointLabel}` };
    });
  },

  async withProbe(ctx) {
    const state = states.get(ctx)!;
    const { replica, client, sdk } = state;
    const probeKey = replica.objectKey(ctx.probeFile);

    await ctx.checks.run("conditional write", { required: false }, async () => {
      try {
        await client.send(
          new sdk.PutObjectCommand({
            Bucket: replica.bucket,
            Key: probeKey,
            Body: ctx.probeBytes,
            IfNoneMatch: "*",
          }),
        );
      } catch (err) {
        const status = httpStatus(err);
        if (status === 412 || errorName(err) === "PreconditionFailed") {
          return { detail: "enforced: If-None-Match: * on an existing object was refused (412)" };
        }
        if (status === 501 || errorName(err) === "NotImplemented") {
          return notEnforced("not supported (501)");
        }
        throw s3Failure(err, replica, "conditional PUT");
      }
      return notEnforced("not enforced: an If-None-Match: * PUT replaced an existing object");
    });

    await ctx.checks.run("checksum headers", { required: true }, async () => {
      const key = `${probePrefix(replica, ctx)}checksum`;
      state.extraKeys.add(key);
      try {
        await client.send(
          new sdk.PutObjectCommand({
            Bucket: replica.bucket,
            Key: key,
            Body: ctx.probeBytes,
            ChecksumAlgorithm: "CRC32",
          }),
        );
      } catch (err) {
        const detail = `x-amz-checksum-crc32 rejected (${describe(err)})`;
        if (replica.profile.checksumMode === "when-supported") {
          throw new CheckFailure(
            `${detail}, and the ${replica.profile.provider} profile sends it on every upload`,
            `set checksum-mode: when-required, or provider: ${suggestedProvider(replica)}`,
          );
        }
        return {
          detail: `${detail}; fine: the ${replica.profile.provider} profile sends checksums ` +
            `only where the API requires them`,
        };
      }
      return {
        detail:
          `x-amz-checksum-crc32 accepted (this profile: checksum-mode ${replica.profile.checksumMode})`,
      };
    });

    await ctx.checks.run("multipart", { required: true }, async () => {
      const key = `${probePrefix(replica, ctx)}multipart`;
      state.extraKeys.add(key);
      try {
        const created = await client.send(
          new sdk.CreateMultipartUploadCommand({ Bucket: replica.bucket, Key: key }),
        );
        const uploadId = created.UploadId!;
        state.pendingUpload = { key, uploadId };
        const part = await client.send(
          new sdk.UploadPartCommand({
            Bucket: replica.bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber: 1,
            Body: ctx.probeBytes,
          }),
        );
        await client.send(
          new sdk.CompleteMultipartUploadCommand({
            Bucket: replica.bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
          }),
        );
        state.pendingUpload = undefined;
      } catch (err) {
        const failure = s3Failure(err, replica, "multipart upload");
        throw new CheckFailure(
          failure.message,
          failure.fix ??
            `files above part-size (${
              mib(replica.partSize)
            }) are multipart uploads; this store must support them`,
        );
      }
      const { concurrency } = replica.profile;
      return {
        detail: `works; part size ${mib(replica.partSize)} × ${concurrency} in flight, ` +
          `largest file ${gib(replica.partSize * MAX_PARTS)} (${MAX_PARTS} parts)`,
      };
    });
  },

  after(ctx) {
    const state = states.get(ctx)!;
    const skews = [...state.skews].sort((a, b) => a - b);
    if (skews.length === 0) {
      ctx.checks.add({
        name: "clock",
        status: "warn",
        required: false,
        detail: "no Date header in the server's answers: clock skew unknown",
      });
      return Promise.resolve();
    }
    const skew = skews[Math.floor(skews.length / 2)];
    const shown = `${skew >= 0 ? "+" : "-"}${(Math.abs(skew) / 1000).toFixed(1)} s`;
    const abs = Math.abs(skew);
    const fix = "synchronise this host's clock (NTP, e.g. systemd-timesyncd or chrony)";
    ctx.checks.add(
      abs > SKEW_FAIL_MS
        ? {
          name: "clock",
          status: "fail",
          required: true,
          detail: `server clock differs by ${shown}: signed requests are refused beyond 15 min`,
          fix,
        }
        : abs > SKEW_WARN_MS
        ? {
          name: "clock",
          status: "warn",
          required: false,
          detail: `server clock differs by ${shown} (Date header, ±1 s): LTX timestamps and ` +
            `point-in-time restores use this host's clock`,
          fix,
        }
        : {
          name: "clock",
          status: "ok",
          required: false,
          detail: `skew ${shown} against the server's Date header (±1 s resolution)`,
        },
    );
    return Promise.resolve();
  },

  explain(err, ctx) {
    const state = states.get(ctx);
    if (state === undefined) return undefined;
    const { fix } = s3Failure(err, state.replica, "request");
    const message = err instanceof Error ? err.message : String(err);
    return fix === undefined
      ? undefined
      : new CheckFailure(message.replace(/; the \S+ profile may not fit .*$/, ""), fix);
  },

  async cleanup(ctx) {
    const state = states.get(ctx);
    if (state === undefined) return;
    const { replica, client, sdk } = state;
    const problems: string[] = [];
    if (state.pendingUpload !== undefined) {
      const { key, uploadId } = state.pendingUpload;
      await client.send(
        new sdk.AbortMultipartUploadCommand({
          Bucket: replica.bucket,
          Key: key,
          UploadId: uploadId,
        }),
      ).catch((err) => problems.push(`abort upload of ${key}: ${describe(err)}`));
    }
    for (const key of state.extraKeys) {
      await client.send(new sdk.DeleteObjectCommand({ Bucket: replica.bucket, Key: key }))
        .catch((err) => {
          if (httpStatus(err) !== 404) problems.push(`${key}: ${describe(err)}`);
        });
    }
    if (replica !== ctx.probe) await replica.close();
    if (problems.length > 0) throw new Error(`could not delete ${problems.join("; ")}`);
  },
};

function notEnforced(what: string) {
  return {
    status: "warn" as const,
    detail: `${what}; sluice cannot tell when a second replicator writes into this replica`,
    fix: "make sure only one sluice replicates to this location (e.g. stop the old instance " +
      "before a deploy starts the new one), or use a store that enforces If-None-Match",
  };
}

function profileLine(replica: S3ReplicaClient) {
  const profile = replica.profile;
  const settings = describeProfile(profile);
  const detected = detectProvider(endpointOf(replica));
  const via = profile.providerSource === "config"
    ? "set in the config"
    : profile.providerSource === "endpoint"
    ? "recognised from the endpoint"
    : "default";
  if (detected !== undefined && detected !== profile.provider) {
    return {
      status: "warn" as const,
      detail:
        `${profile.provider} (${via}) but ${replica.endpointLabel} looks like ${detected}; ${settings}`,
      fix: `set provider: ${detected} (or remove provider: to detect it)`,
    };
  }
  return { detail: `${profile.provider} (${via}); ${settings}` };
}

function describeProfile(profile: S3Profile): string {
  const parts = [
    `checksum-mode ${profile.checksumMode}`,
    `sign-payload ${profile.signPayload}`,
    `sign-accept-encoding ${profile.signAcceptEncoding}`,
    `concurrency ${profile.concurrency}`,
  ];
  if (profile.tigrisConsistent) parts.push("X-Tigris-Consistent");
  if (!profile.batchDelete) parts.push("single-object deletes");
  return parts.join(", ");
}

async function credentialsLine(ctx: DoctorContext, state: S3State) {
  const spec = ctx.spec as { accessKeyId?: string };
  if (spec.accessKeyId !== undefined) {
    return {
      detail: `access-key-id/secret-access-key from the config (replica or top level` +
        `${keyHint(spec.accessKeyId)})`,
    };
  }
  const provider = state.client.config.credentials;
  let identity: { accessKeyId: string; $source?: Record<string, unknown> };
  try {
    identity = await withTimeout(provider({}), 10_000, "credential lookup timed out after 10 s");
  } catch (err) {
    const gcs = state.replica.profile.provider === "gcs";
    throw new CheckFailure(
      `no credentials found (${describe(err)})`,
      gcs
        ? "gs replicas use a GCS HMAC key (gcloud storage hmac create SERVICE_ACCOUNT): set access-key-id and secret-access-key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        : "set access-key-id and secret-access-key in the config, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile / instance role",
    );
  }
  const source = Object.keys(identity.$source ?? {});
  const key = keyHint(identity.accessKeyId);
  const env = ctx.env;
  if (source.includes("CREDENTIALS_ENV_VARS")) {
    const names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
      .filter((name) => env[name] !== undefined && env[name] !== "");
    return { detail: `from the environment (${names.join(", ")}${key})` };
  }
  if (source.some((s) => s.startsWith("CREDENTIALS_PROFILE") || s === "CREDENTIALS_SSO")) {
    const file = env.AWS_SHARED_CREDENTIALS_FILE ?? "~/.aws/credentials";
    return { detail: `from AWS profile "${env.AWS_PROFILE ?? "default"}" (${file}${key})` };
  }
  if (source.some((s) => s.includes("WEB_ID"))) {
    return { detail: `from web identity (AWS_WEB_IDENTITY_TOKEN_FILE${key})` };
  }
  if (source.includes("CREDENTIALS_HTTP")) {
    return { detail: `from the container credentials endpoint (ECS/EKS${key})` };
  }
  return { detail: `from the instance role (EC2 instance metadata${key})` };
}

/** Records, for every response, the server's Date minus the local midpoint of the request. */
function recordServerDates(client: S3Client, skews: number[]): void {
  const record = (headers: Record<string, string> | undefined, sent: number) => {
    const date = headers?.date ?? headers?.Date;
    const server = date === undefined ? NaN : Date.parse(date);
    if (!Number.isNaN(server)) skews.push(server + 500 - (sent + Date.now()) / 2);
  };
  client.middlewareStack.add(
    (next) => async (args) => {
      const sent = Date.now();
      try {
        const result = await next(args);
        record((result.response as { headers?: Record<string, string> }).headers, sent);
        return result;
      } catch (err) {
        record(
          (err as { $response?: { headers?: Record<string, string> } }).$response?.headers,
          sent,
        );
        throw err;
      }
    },
    { step: "deserialize", priority: "high", name: "sluiceDoctorDate" },
  );
}

/** A failure for an S3 error, with the fix an operator needs. */
function s3Failure(err: unknown, replica: S3ReplicaClient, what: string): CheckFailure {
  const name = errorName(err);
  const status = httpStatus(err);
  const bucket = replica.bucket;
  if (name === "NoSuchBucket" || (what.startsWith("bucket") && status === 404)) {
    return new CheckFailure(
      `bucket "${bucket}" does not exist at ${replica.endpointLabel}`,
      `create it (sluice never creates buckets), e.g. ` +
        (replica.profile.provider === "gcs"
          ? `gcloud storage buckets create gs://${bucket}`
          : `aws s3 mb s3://${bucket}`) +
        `, or correct the bucket name`,
    );
  }
  if (status === 403 && name !== "SignatureDoesNotMatch") {
    return new CheckFailure(
      `${what}: access denied (${describe(err)})`,
      `grant these credentials list, get, put and delete on ${bucket}/${replica.path}*`,
    );
  }
  if (name === "SignatureDoesNotMatch") {
    const detected = suggestedProvider(replica);
    return new CheckFailure(
      `${what}: ${describe(err)}`,
      detected !== replica.profile.provider
        ? `set provider: ${detected}`
        : replica.profile.signAcceptEncoding
        ? "check the secret key; if a proxy rewrites Accept-Encoding, set sign-accept-encoding: false"
        : "check the secret key and the region",
    );
  }
  if (name === "InvalidArgument" || name === "InvalidRequest" || name === "NotImplemented") {
    return new CheckFailure(
      `${what}: ${describe(err)}`,
      `the ${replica.profile.provider} profile may not fit this store: try provider: ` +
        `${suggestedProvider(replica)} or checksum-mode: when-required`,
    );
  }
  return new CheckFailure(`${what}: ${describe(err)}`);
}

/** The provider the endpoint suggests, or `generic` for an unknown S3-compatible server. */
function suggestedProvider(replica: S3ReplicaClient): string {
  return detectProvider(endpointOf(replica)) ?? "generic";
}

function endpointOf(replica: S3ReplicaClient): string | undefined {
  return replica.endpointLabel === "AWS S3" ? undefined : replica.endpointLabel;
}

function probePrefix(replica: S3ReplicaClient, _ctx: DoctorContext): string {
  return replica.path ? `${replica.path}/` : "";
}

function describe(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  const name = errorName(cause);
  const status = httpStatus(cause);
  const message = cause instanceof Error ? cause.message : String(cause);
  return `${name}${status ? ` HTTP ${status}` : ""}: ${message}`.slice(0, 300);
}

function errorName(err: unknown): string {
  const inner = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return inner instanceof Error ? inner.name : "Error";
}

function httpStatus(err: unknown): number | undefined {
  const inner = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return (inner as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata
    ?.httpStatusCode;
}

/** `key …WXYZ`: the last four characters of a long access key ID (enough to tell keys apart). */
function keyHint(id: string): string {
  return id.length >= 12 ? `; key …${id.slice(-4)}` : "";
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(bytes % (1024 * 1024) === 0 ? 0 : 1)} MiB`;
}

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
