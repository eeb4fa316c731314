/**
 * The kernel refused a watch or a descriptor: a limit of the machine, not a fault of the
 * directory. Callers fall back to scanning and say once which limit to raise.
 *
 * @module
 */

/** Which limit was reached. */
export type WatchLimit = "watches" | "instances" | "descriptors";

/** errno values that mean "a limit was reached" (Linux). */
const ENFILE = 23;
const EMFILE = 24;
const ENOSPC = 28;
const ENOMEM = 12;

/** A watch could not be added (or an inotify instance created) because a limit was reached. */
export class WatchLimitError extends Error {
  /** Which limit. */
  readonly limit: WatchLimit;
  /** The directory that is not watched. */
  readonly dir: string;
  /** The errno reported by the kernel. */
  readonly errno: number;

  /** Builds an error naming the directory and the setting to raise. */
  constructor(limit: WatchLimit, dir: string, errno: number) {
    super(`cannot watch ${dir}: ${LIMIT_ADVICE[limit]}`);
    this.name = "WatchLimitError";
    this.limit = limit;
    this.dir = dir;
    this.errno = errno;
  }

  /** The sysctl (or resource limit) that lifts this limit, for logs. */
  get sysctl(): string {
    return LIMIT_SETTING[this.limit];
  }
}

const LIMIT_SETTING: Record<WatchLimit, string> = {
  watches: "fs.inotify.max_user_watches",
  instances: "fs.inotify.max_user_instances",
  descriptors: "the open files limit (ulimit -n / LimitNOFILE=) or fs.file-max",
};

const LIMIT_ADVICE: Record<WatchLimit, string> = {
  watches: "inotify watch limit reached (ENOSPC); raise the sysctl fs.inotify.max_user_watches",
  instances: "inotify instance or open files limit reached (EMFILE); raise the sysctl " +
    "fs.inotify.max_user_instances (or the open files limit, ulimit -n)",
  descriptors: "out of file descriptors; raise the open files limit (ulimit -n, " +
    "LimitNOFILE= under systemd) or the sysctl fs.file-max",
};

/**
 * The limit an errno from `inotify_add_watch` means, or undefined for any other failure.
 * ENOMEM is the kernel's answer when watches cost more memory than it grants: the same remedy.
 */
export function addWatchLimit(errno: number): WatchLimit | undefined {
  return errno === ENOSPC || errno === ENOMEM ? "watches" : undefined;
}

/** The limit an errno from `inotify_init1` or `eventfd` means, or undefined. */
export function instanceLimit(
  errno: number,
  call: "inotify_init1" | "eventfd",
): WatchLimit | undefined {
  if (errno === ENFILE) return "descriptors";
  if (errno === EMFILE) return call === "inotify_init1" ? "instances" : "descriptors";
  return undefined;
}

/** Whether `err` (from a Deno file API) means the process or the system ran out of descriptors. */
export function isDescriptorExhaustion(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  return code === "EMFILE" || code === "ENFILE" || /\(os error 2[34]\)/.test(err.message);
}
