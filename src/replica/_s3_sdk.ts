/**
 * The AWS SDK, loaded on first use. Importing it costs about 28 MB of memory and a noticeable
 * start-up time; a process whose replicas are all directories never pays either.
 *
 * The specifiers are string literals, so `deno compile` still embeds both packages.
 *
 * @module
 */

import type * as ClientS3 from "@aws-sdk/client-s3";
import type * as LibStorage from "@aws-sdk/lib-storage";

/** The parts of the SDK the S3 client uses. */
export type S3SDK = typeof ClientS3 & { Upload: typeof LibStorage.Upload };

let loading: Promise<S3SDK> | undefined;

/** Loads the SDK once; later calls share the same promise. */
export function loadS3SDK(): Promise<S3SDK> {
  loading ??= Promise.all([import("@aws-sdk/client-s3"), import("@aws-sdk/lib-storage")])
    .then(([s3, storage]) => ({ ...s3, Upload: storage.Upload }));
  return loading;
}
