/**
 * Directory checks beyond the generic probe: the directory exists or can be created, fsync
 * works on a file and on the directory, a rename in place works (and the file system is one
 * where it is atomic), and there is free space.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { syncDirectory } from "../replica/mod.ts";
import type { BackendChecks, DoctorContext } from "./_context.ts";
import { CheckFailure } from "./_report.ts";

/** Less free space than this fails: not even one snapshot of a small database fits. */
const FREE_FAIL_BYTES = 16 * 1024 * 1024;
/** Less free space than this warns. */
const FREE_WARN_BYTES = 1024 ** 3;
/** File systems whose rename or fsync guarantees depend on a remote server or a FUSE driver. */
const WEAK_FS = /^(fuse|nfs|cifs|smb|9p|v9fs|ceph|glusterfs|davfs)/i;

interface FileState {
  /** Directories this run created (to reach the replica path), removed in cleanup. */
  created: string[];
}

const states = new WeakMap<DoctorContext, FileState>();

/** The directory hooks. */
export const fileChecks: BackendChecks = {
  async before(ctx) {
    const root = rootOf(ctx);
    const state: FileState = { created: [] };
    states.set(ctx, state);
    await ctx.checks.run("directory", { required: true, blocking: true }, async () => {
      const info = await Deno.stat(root).catch((err) => err as Error);
      if (!(info instanceof Error)) {
        if (!info.isDirectory) {
          throw new CheckFailure(
            `${root} exists but is not a directory`,
            "point the replica at a directory (or remove the file)",
          );
        }
        return { detail: `${root} exists` };
      }
      if (!(info instanceof Deno.errors.NotFound) && !isNotADirectory(info)) {
        throw explain(info, root);
      }
      await createChain(root, state.created);
      return {
        detail: `${root} did not exist; creating it worked (sluice creates it on the first ` +
          `write; the doctor removes what it created)`,
      };
    });
  },

  async withProbe(ctx) {
    const dir = join(rootOf(ctx), ctx.probeName);
    await ctx.checks.run("fsync", { required: true }, async () => {
      const path = join(dir, "fsync-probe");
      const file = await Deno.open(path, { write: true, create: true, truncate: true });
      try {
        await file.write(ctx.probeBytes);
        await file.sync();
      } catch (err) {
        throw explain(err, path);
      } finally {
        file.close();
      }
      try {
        await syncDirectory(dir);
      } catch (err) {
        throw explain(err, dir);
      }
      return { detail: "fsync of a file and of its directory work" };
    });
    await ctx.checks.run("rename", { required: true }, async () => {
      const from = join(dir, "fsync-probe");
      const to = join(dir, "renamed-probe");
      try {
        await Deno.rename(from, to);
      } catch (err) {
        throw explain(err, from);
      }
      const moved = await Deno.stat(to).then(() => true, () => false);
      const gone = await Deno.stat(from).then(() => false, () => true);
      if (!moved || !gone) throw new CheckFailure(`rename ${from} -> ${to} did not take effect`);
      const fsType = await fileSystemType(dir);
      if (fsType !== undefined && WEAK_FS.test(fsType)) {
        return {
          status: "warn",
          detail: `rename in place works, but ${fsType} may not make it atomic or durable`,
          fix: "prefer a local file system, or an object-store replica (s3://, gs://) over a mount",
        };
      }
      return { detail: `rename in place works${fsType ? ` (${fsType})` : ""}` };
    });
  },

  async after(ctx) {
    const root = rootOf(ctx);
    await ctx.checks.run("free space", { required: true }, async () => {
      const free = await freeBytes(root);
      if (free === undefined) {
        return { status: "warn", detail: "unknown (df failed)" };
      }
      const shown = formatBytes(free);
      if (free < FREE_FAIL_BYTES) {
        throw new CheckFailure(
          `${shown} free`,
          "free space on this file system, or move the replica",
        );
      }
      if (free < FREE_WARN_BYTES) {
        return {
          status: "warn",
          detail: `${shown} free`,
          fix: "snapshots need about the database's size; free space or move the replica",
        };
      }
      return { detail: `${shown} free` };
    });
  },

  explain(err, ctx) {
    const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
    const { fix } = explain(cause, rootOf(ctx));
    const message = err instanceof Error ? err.message : String(err);
    return fix === undefined ? undefined : new CheckFailure(message, fix);
  },

  async cleanup(ctx) {
    const state = states.get(ctx);
    const dir = join(rootOf(ctx), ctx.probeName);
    const problems: string[] = [];
    await Deno.remove(dir, { recursive: true }).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound) && !isNotADirectory(err)) {
        problems.push(`${dir}: ${err.message}`);
      }
    });
    for (const created of [...(state?.created ?? [])].reverse()) {
      // Not recursive: a directory something else wrote into meanwhile stays.
      await Deno.remove(created).catch((err) => problems.push(`${created}: ${err.message}`));
    }
    if (problems.length > 0) throw new Error(`could not remove ${problems.join("; ")}`);
  },
};

function rootOf(ctx: DoctorContext): string {
  return (ctx.spec as { path: string }).path;
}

/** Creates `dir` and its missing parents one by one, recording each created directory. */
async function createChain(dir: string, created: string[]): Promise<void> {
  const missing: string[] = [];
  let current = dir;
  for (;;) {
    const info = await Deno.stat(current).catch((err) => err as Error);
    if (!(info instanceof Error)) {
      if (!info.isDirectory) {
        throw new CheckFailure(
          `${current} is a file, so ${dir} cannot be created`,
          `choose a replica path that is not under the file ${current}`,
        );
      }
      break;
    }
    if (!(info instanceof Deno.errors.NotFound) && !isNotADirectory(info)) {
      throw explain(info, current);
    }
    missing.unshift(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const path of missing) {
    try {
      await Deno.mkdir(path, { mode: 0o755 });
    } catch (err) {
      throw explain(err, path);
    }
    created.push(path);
  }
}

function isNotADirectory(err: Error): boolean {
  return (err as { code?: string }).code === "ENOTDIR" || err instanceof Deno.errors.NotADirectory;
}

/** A failure naming the path and the fix for the usual errno values. */
function explain(err: unknown, path: string): CheckFailure {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string }).code ?? "";
  if (err instanceof CheckFailure) return err;
  if (code === "EROFS" || /read-only file system/i.test(message)) {
    return new CheckFailure(
      `${path}: read-only file system`,
      "remount it read-write or choose a writable replica path",
    );
  }
  if (err instanceof Deno.errors.PermissionDenied || code === "EACCES" || code === "EPERM") {
    return new CheckFailure(
      `${path}: permission denied`,
      "give the user sluice runs as write access to it (chown/chmod), or choose another path",
    );
  }
  if (code === "ENOTDIR" || /not a directory/i.test(message)) {
    return new CheckFailure(
      `${path}: a component of the path is a file, not a directory`,
      "choose a replica path whose parents are directories",
    );
  }
  if (code === "ENOSPC" || /no space left/i.test(message)) {
    return new CheckFailure(
      `${path}: no space left on the device`,
      "free space or move the replica",
    );
  }
  return new CheckFailure(`${path}: ${message}`);
}

/** Available bytes on the file system holding `path` (or its nearest existing parent). */
async function freeBytes(path: string): Promise<number | undefined> {
  const output = await run("df", ["-Pk", await existingAncestor(path)]);
  const fields = output?.trim().split("\n").at(-1)?.split(/\s+/);
  const kib = fields === undefined ? NaN : Number(fields[3]);
  return Number.isFinite(kib) ? kib * 1024 : undefined;
}

async function fileSystemType(path: string): Promise<string | undefined> {
  return (await run("stat", ["-f", "-c", "%T", path]))?.trim() || undefined;
}

async function existingAncestor(path: string): Promise<string> {
  let current = path;
  while (!(await Deno.stat(current).then(() => true, () => false))) {
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  return current;
}

async function run(command: string, args: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

function formatBytes(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}
