/**
 * The `ssh2` package, loaded on first use: a process whose replicas are directories or S3 never
 * loads the SSH stack. The specifier is a string literal, so `deno compile` still embeds it.
 *
 * ssh2's optional native parts (`cpu-features`, the `sshcrypto` binding) are never built here
 * (Deno does not run npm install scripts): ssh2 falls back to its pure JavaScript path on
 * `node:crypto`, without the chacha20-poly1305 cipher (AES-GCM and AES-CTR remain).
 *
 * @module
 */

import type * as SSH2 from "ssh2";

/** The parts of ssh2 the SFTP client uses. */
export type SSH2Module = typeof SSH2;

let loading: Promise<SSH2Module> | undefined;

/** Loads ssh2 once; later calls share the same promise. */
export function loadSSH2(): Promise<SSH2Module> {
  loading ??= import("ssh2").then((module) => (module.default ?? module) as SSH2Module);
  return loading;
}
