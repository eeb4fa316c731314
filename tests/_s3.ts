/**
 * Test helper: a local S3 server (fauxqs in a separate process on 127.0.0.1, see
 * scripts/s3_server.ts) and a matching client spec.
 *
 * ```ts
 * const s3 = await startS3Server();
 * await s3.createBucket("sluice-test");
 * const client = new S3ReplicaClient(s3Spec(s3, "sluice-test", "db"));
 * // …
 * await client.close();
 * await s3.stop();
 * ```
 *
 * @module
 */

import type { S3Spec } from "../src/replica/mod.ts";
import {
  FAUXQS_CREDENTIALS,
  type S3Server,
  type S3ServerOptions,
  startS3Server as startServer,
} from "../scripts/s3_server.ts";

export { FAUXQS_CREDENTIALS, type S3Server, type S3ServerOptions };

/**
 * Starts fauxqs on a free 127.0.0.1 port and waits until it answers. `restart()` keeps the
 * stored objects (fauxqs file storage); `kill()` simulates a crash; `stop()` cleans up.
 */
export function startS3Server(options?: S3ServerOptions): Promise<S3Server> {
  return startServer(options);
}

/** An {@linkcode S3Spec} for `bucket`/`path` on a test server (path style, test credentials). */
export function s3Spec(
  server: { endpoint: string },
  bucket: string,
  path: string,
  extra: Partial<S3Spec> = {},
): S3Spec {
  return {
    bucket,
    path,
    endpoint: server.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    ...FAUXQS_CREDENTIALS,
    ...extra,
  };
}
