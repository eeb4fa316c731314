/**
 * The owner lease's conditional writes on Azure Blob Storage: Put Blob with
 * `If-None-Match: *` (create) and `If-Match: <etag>` (renew, release). Azure answers a failed
 * condition with 412 (`ConditionNotMet`) or, for a create over an existing blob, 409
 * (`BlobAlreadyExists`).
 *
 * @module
 */

import { Readable } from "node:stream";
import type { ContainerClient } from "@azure/storage-blob";
import { LEASE_NAME, type LeaseStore, type ReplicaError } from "./client.ts";

/** What the lease needs from its {@linkcode ABSReplicaClient}. */
export interface ABSLeaseContext {
  /** The client's location, for messages. */
  location: string;
  /** The blob prefix of the replica, `""` or ending in `/`. */
  prefix: string;
  /** Identifies the storage account and container: the probe runs once per key per process. */
  probeKey: string;
  container(): Promise<ContainerClient>;
  error(operation: string, err: unknown): ReplicaError;
}

/** Probe results per storage account and container, for the life of the process. */
const probes = new Map<string, Promise<boolean>>();

/** The lease store of an Azure replica. */
export function absLeaseStore(context: ABSLeaseContext): LeaseStore {
  const name = context.prefix + LEASE_NAME;
  const blob = async (blobName = name) => (await context.container()).getBlockBlobClient(blobName);
  const put = async (blobName: string, text: string, conditions: Record<string, string>) => {
    const bytes = new TextEncoder().encode(text);
    const response = await (await blob(blobName)).upload(bytes, bytes.length, {
      conditions,
      blobHTTPHeaders: { blobContentType: "application/json" },
    });
    return response.etag!;
  };
  return {
    path: `${context.location}/${LEASE_NAME}`,
    async read() {
      try {
        const response = await (await blob()).download(0, undefined, { maxRetryRequests: 2 });
        const body = response.readableStreamBody;
        const text = body ? await new Response(Readable.toWeb(body as Readable)).text() : "";
        return { text, etag: response.etag! };
      } catch (err) {
        if (status(err) === 404 && code(err) !== "ContainerNotFound") return undefined;
        throw context.error(`read ${name}`, err);
      }
    },
    async create(text) {
      try {
        return await put(name, text, { ifNoneMatch: "*" });
      } catch (err) {
        if (status(err) === 409 || status(err) === 412) return undefined;
        throw context.error(`create ${name}`, err);
      }
    },
    async replace(text, etag) {
      try {
        return await put(name, text, { ifMatch: etag });
      } catch (err) {
        if (status(err) === 412 || (status(err) === 404 && code(err) !== "ContainerNotFound")) {
          return undefined;
        }
        throw context.error(`renew ${name}`, err);
      }
    },
    enforcesConditions() {
      let probe = probes.get(context.probeKey);
      if (probe === undefined) {
        probe = runProbe(context, put, blob);
        probes.set(context.probeKey, probe);
        probe.catch(() => probes.delete(context.probeKey)); // a failed probe is asked again
      }
      return probe;
    },
  };
}

async function runProbe(
  context: ABSLeaseContext,
  put: (name: string, text: string, conditions: Record<string, string>) => Promise<string>,
  blob: (name: string) => Promise<{ deleteIfExists(): Promise<unknown> }>,
): Promise<boolean> {
  const name = `${context.prefix}${LEASE_NAME}.probe-${crypto.randomUUID().slice(0, 8)}`;
  const refused = async (conditions: Record<string, string>) => {
    try {
      await put(name, "probe\n", conditions);
      return false;
    } catch (err) {
      if (status(err) === 409 || status(err) === 412) return true;
      throw context.error(`probe conditional writes with ${name}`, err);
    }
  };
  try {
    await put(name, "probe\n", {});
  } catch (err) {
    throw context.error(`write probe ${name}`, err);
  }
  try {
    return await refused({ ifNoneMatch: "*" }) && await refused({ ifMatch: '"0x0sluiceprobe"' });
  } finally {
    await (await blob(name)).deleteIfExists().catch(() => {});
  }
}

function status(err: unknown): number | undefined {
  const value = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof value === "number" ? value : undefined;
}

function code(err: unknown): string | undefined {
  const value = (err as { code?: unknown } | null)?.code;
  return typeof value === "string" ? value : undefined;
}
