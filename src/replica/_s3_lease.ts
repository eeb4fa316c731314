/**
 * The owner lease's conditional writes on S3: PutObject with `If-None-Match: *` (create) and
 * `If-Match: <etag>` (renew, release). AWS S3 enforces both (412 PreconditionFailed, or 409
 * ConditionalRequestConflict for a concurrent create); several S3-compatible servers accept the
 * headers and ignore them, which the probe detects.
 *
 * @module
 */

import type { S3Client } from "@aws-sdk/client-s3";
import type { S3SDK } from "./_s3_sdk.ts";
import { LEASE_NAME, type LeaseStore, type ReplicaError } from "./client.ts";

/** What the lease needs from its {@linkcode S3ReplicaClient}. */
export interface S3LeaseContext {
  /** The client's location, for messages. */
  location: string;
  bucket: string;
  /** The key prefix of the replica, `""` or ending in `/`. */
  prefix: string;
  /** Identifies endpoint and bucket: the probe runs once per key per process. */
  probeKey: string;
  sdk(): Promise<{ client: S3Client; sdk: S3SDK }>;
  error(operation: string, err: unknown): ReplicaError;
}

/** Probe results per endpoint and bucket, for the life of the process. */
const probes = new Map<string, Promise<boolean>>();

/** The lease store of an S3 replica. */
export function s3LeaseStore(context: S3LeaseContext): LeaseStore {
  const key = context.prefix + LEASE_NAME;
  const put = async (objectKey: string, text: string, conditions: Conditions) => {
    const { client, sdk } = await context.sdk();
    const body = new TextEncoder().encode(text);
    const response = await client.send(
      new sdk.PutObjectCommand({
        Bucket: context.bucket,
        Key: objectKey,
        Body: body,
        ContentLength: body.length,
        ContentType: "application/json",
        ...conditions,
      }),
    );
    return response.ETag ?? "";
  };
  return {
    path: `${context.location}/${LEASE_NAME}`,
    async read() {
      try {
        const { client, sdk } = await context.sdk();
        const response = await client.send(
          new sdk.GetObjectCommand({ Bucket: context.bucket, Key: key }),
        );
        const text = (await response.Body?.transformToString()) ?? "";
        return { text, etag: response.ETag ?? "" };
      } catch (err) {
        if (isMissingKey(err)) return undefined;
        throw context.error(`read ${key}`, err);
      }
    },
    async create(text) {
      try {
        return await put(key, text, { IfNoneMatch: "*" });
      } catch (err) {
        if (isConditionFailure(err)) return undefined;
        throw context.error(`create ${key}`, err);
      }
    },
    async replace(text, etag) {
      try {
        return await put(key, text, { IfMatch: etag });
      } catch (err) {
        if (isConditionFailure(err) || isMissingKey(err)) return undefined;
        throw context.error(`renew ${key}`, err);
      }
    },
    enforcesConditions() {
      let probe = probes.get(context.probeKey);
      if (probe === undefined) {
        probe = runProbe(context, put);
        probes.set(context.probeKey, probe);
        probe.catch(() => probes.delete(context.probeKey)); // a failed probe is asked again
      }
      return probe;
    },
  };
}

type Conditions = { IfNoneMatch?: string; IfMatch?: string };

async function runProbe(
  context: S3LeaseContext,
  put: (key: string, text: string, conditions: Conditions) => Promise<string>,
): Promise<boolean> {
  const key = `${context.prefix}${LEASE_NAME}.probe-${crypto.randomUUID().slice(0, 8)}`;
  const refused = async (conditions: Conditions) => {
    try {
      await put(key, "probe\n", conditions);
      return false;
    } catch (err) {
      if (isConditionFailure(err)) return true;
      throw context.error(`probe conditional writes with ${key}`, err);
    }
  };
  try {
    await put(key, "probe\n", {});
  } catch (err) {
    throw context.error(`write probe ${key}`, err);
  }
  try {
    return await refused({ IfNoneMatch: "*" }) && await refused({ IfMatch: '"sluice-probe"' });
  } finally {
    const { client, sdk } = await context.sdk();
    await client.send(new sdk.DeleteObjectCommand({ Bucket: context.bucket, Key: key }))
      .catch(() => {});
  }
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function isConditionFailure(err: unknown): boolean {
  const name = err instanceof Error ? err.name : "";
  return status(err) === 412 || status(err) === 409 || name === "PreconditionFailed" ||
    name === "ConditionalRequestConflict";
}

function isMissingKey(err: unknown): boolean {
  const name = err instanceof Error ? err.name : "";
  return name === "NoSuchKey" || (status(err) === 404 && name !== "NoSuchBucket");
}
