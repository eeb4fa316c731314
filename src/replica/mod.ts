/**
 * Replica clients: where LTX files are stored. One interface ({@linkcode ReplicaClient}),
 * two backends (a directory, an S3 bucket), and a factory from a parsed replica spec.
 *
 * @module
 */

import type { ReplicaClient } from "./client.ts";
import { type AgeKeys, AgeReplicaClient } from "./age.ts";
import { FileReplicaClient } from "./file.ts";
import { S3ReplicaClient, type S3Spec } from "./s3.ts";
import { ABSReplicaClient, type ABSSpec } from "./abs.ts";
import { SFTPReplicaClient, type SFTPSpec } from "./sftp.ts";
import { WebDAVReplicaClient, type WebDAVSpec } from "./webdav.ts";

export {
  LEASE_NAME,
  type LeaseStore,
  type LeaseVersion,
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
export {
  cleanPath,
  describeS3Profiles,
  isAWSEndpoint,
  MIN_PART_SIZE,
  S3ReplicaClient,
  type S3Spec,
} from "./s3.ts";
export {
  type ChecksumMode,
  detectProvider,
  GCS_ENDPOINT,
  profileFields,
  resolveS3Profile,
  S3_PROVIDERS,
  type S3Profile,
  type S3ProfileOptions,
  type S3Provider,
} from "./_s3_profile.ts";
export { formatRFC3339Nano, parseRFC3339 } from "./_timestamp.ts";
export {
  type AgeKeys,
  AgeReplicaClient,
  checkReplicaContent,
  DecryptionError,
  EncryptedContentError,
  MixedReplicaError,
  type ReplicaContent,
  replicaContent,
} from "./age.ts";
export {
  ABS_DEFAULT_BLOCK_SIZE,
  ABS_TIMESTAMP_METADATA_KEY,
  ABSReplicaClient,
  type ABSSpec,
  cleanBlobPath,
} from "./abs.ts";

/** A replica destination as parsed from a URL or the config file, with its age keys if any. */
export type ReplicaSpec = StorageSpec & { age?: AgeKeys };

/** Where a replica is stored: one case per backend. */
export type StorageSpec =
  | { type: "file"; path: string }
  | ({ type: "s3" } & S3Spec)
  | ({ type: "abs" } & ABSSpec)
  | ({ type: "sftp" } & SFTPSpec)
  | ({ type: "webdav" } & WebDAVSpec);

/**
 * Builds the client for a spec: the backend's, wrapped in the age decorator when the spec has
 * `age` keys (src/replica/age.ts). No I/O happens here; the first operation reaches the storage.
 * @throws {RangeError} for an invalid spec (empty bucket, part size below 5 MiB).
 */
export function createReplicaClient(spec: ReplicaSpec): ReplicaClient {
  const { age, ...storage } = spec;
  const client = createStorageClient(storage as StorageSpec);
  return age === undefined ? client : new AgeReplicaClient(client, age);
}

function createStorageClient(spec: StorageSpec): ReplicaClient {
  switch (spec.type) {
    case "file":
      return new FileReplicaClient(spec.path);
    case "s3": {
      const { type: _type, ...s3 } = spec;
      return new S3ReplicaClient(s3);
    }
    case "abs": {
      const { type: _type, ...abs } = spec;
      return new ABSReplicaClient(abs);
    }
    case "sftp": {
      const { type: _type, ...sftp } = spec;
      return new SFTPReplicaClient(sftp);
    }
    case "webdav": {
      const { type: _type, ...webdav } = spec;
      return new WebDAVReplicaClient(webdav);
    }
  }
}
export { SFTPReplicaClient, type SFTPSpec, splitHostPort } from "./sftp.ts";
export { WebDAVReplicaClient, type WebDAVSpec } from "./webdav.ts";
/** The resumable download stream of the S3 client, exported for its unit test. */
export { resumableStream } from "./_resumable_stream.ts";
/**
 * The WebDAV client's PROPFIND request body and multistatus parser, exported for its tests
 * (which read a file's stored timestamp property straight from the server).
 */
export { type DavEntry, parseMultistatus, PROPFIND_BODY } from "./_webdav_xml.ts";
/** Bounded concurrency over many small storage calls (see `_concurrency.ts`). */
export { mapConcurrently } from "./_concurrency.ts";
