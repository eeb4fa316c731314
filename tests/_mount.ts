/**
 * Test support: small tmpfs mounts and read-only bind mounts, for tests of a full or read-only
 * disk. They need root (and a kernel that lets this container mount); tests that use them are
 * `ignore`d when {@linkcode canMount} is false, so they are reported skipped, never passed.
 *
 * @module
 */

async function run(command: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Whether this process may mount file systems (root, and mounting allowed here). */
export async function canMount(): Promise<boolean> {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return false;
  const dir = await Deno.makeTempDir({ prefix: "sluice-mount-probe-" });
  try {
    await run("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]);
    await run("umount", [dir]);
    return true;
  } catch {
    return false;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Mounts a tmpfs of `size` (e.g. "8m") on the existing directory `dir`. */
export function mountTmpfs(dir: string, size: string): Promise<void> {
  return run("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]);
}

/** Makes `dir` read-only by bind-mounting it read-only over itself (root ignores modes). */
export async function mountReadOnly(dir: string): Promise<void> {
  await run("mount", ["--bind", dir, dir]);
  await run("mount", ["-o", "remount,ro,bind", dir]);
}

/** Unmounts `dir` (lazily: a process still inside it does not keep it mounted). */
export function unmount(dir: string): Promise<void> {
  return run("umount", ["-l", dir]);
}
