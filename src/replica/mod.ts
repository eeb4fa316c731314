/**
 * Replica clients: where LTX files are stored. One interface ({@linkcode ReplicaClient}),
 * two backends (a directory, an S3 bucket), and a factory from a parsed replica spec.
 *
 * @module
 */

import type { ReplicaClient } from "./client.ts";
import { FileReplicaClient } from "./file.ts";
import { S3ReplicaClient, type S3Spec } from "./s3.ts";

export {
  type ListOptions,
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type OpenOptions,
  OWNER_MARKER_NAME,
  type OwnerMarker,
  type ReplicaClient,
  ReplicaError,
  SNAPSHOT_LEVEL,
} from "./client.ts";
export { FileReplicaClient, syncDirectory, writeAll } from "./file.ts";
export { FlushBehind } from "./_flush_behind.ts";
export { cleanPath, isAWSEndpoint, MIN_PART_SIZE, S3ReplicaClient, type S3Spec } from "./s3.ts";
export { formatRFC3339Nano, parseRFC3339 } from "./_timestamp.ts";

/** A replica destination as parsed from a URL or the config file. */
export type ReplicaSpec =
  | { type: "file"; path: string }
  | ({ type: "s3" } & S3Spec);

/**
 * Builds the client for a spec. No I/O happens here; the first operation reaches the storage.
 * @throws {RangeError} for an invalid spec (empty bucket, part size below 5 MiB).
 */
export function createReplicaClient(spec: ReplicaSpec): ReplicaClient {
  switch (spec.type) {
    case "file":
      return new FileReplicaClient(spec.path);
    case "s3": {
      const { type: _type, ...s3 } = spec;
      return new S3ReplicaClient(s3);
    }
  }
}
/** The resumable download stream of the S3 client, exported for its unit test. */
export { resumableStream } from "./_resumable_stream.ts";
