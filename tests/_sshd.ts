/**
 * Test support: Debian's OpenSSH server (`sshd -D -e -f <generated config>`) on a loopback port,
 * with generated host and user keys, serving SFTP (internal-sftp) for one test user.
 *
 * Password authentication needs a system account with a password: when the test runs as root,
 * the account `sluice-sftp` is created once (no home, no shell access: ForceCommand
 * internal-sftp), given a random password shared by the servers running at the same time (test
 * files run in parallel) and locked again when the last of them stops.
 *
 * @module
 */

import { join } from "node:path";
import { freePort } from "./_sluice.ts";

/** Path of the OpenSSH server binary (Debian's openssh-server package). */
export const SSHD_PATH = "/usr/sbin/sshd";
/** The system account the tests log in as. */
export const SFTP_USER = "sluice-sftp";

/** Why the SFTP tests cannot run here, or undefined when they can. */
export function sshdUnavailable(): string | undefined {
  try {
    Deno.statSync(SSHD_PATH);
  } catch {
    return `${SSHD_PATH} is absent (apt-get install -y openssh-server)`;
  }
  if (Deno.uid() !== 0) return "the SFTP tests create a login account: run them as root";
  try {
    Deno.statSync("/usr/bin/ssh-keygen");
  } catch {
    return "ssh-keygen is absent";
  }
  return undefined;
}

/** A running sshd and what a client needs to reach it. */
export interface SshServer {
  host: string;
  port: number;
  user: string;
  password: string;
  /** Private key accepted for {@linkcode SshServer.user} (OpenSSH format, ed25519). */
  userKeyPath: string;
  /** The server's host key as an authorized_keys line (`ssh-ed25519 AAAA…`). */
  hostKeyLine: string;
  /** The directory the user writes in (owned by the user). */
  dataDir: string;
  /** The sshd process (its pid is the one signalled). */
  process: Deno.ChildProcess;
  /** Stops sshd (SIGKILL by pid), locks the account if no other server uses it, removes the temp dir. */
  stop(): Promise<void>;
  /** Kills sshd (every session with it) and starts it again on the same port. */
  restart(): Promise<void>;
}

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

async function ensureUser(): Promise<{ uid: number; gid: number }> {
  const lookup = async () => {
    const out = await new Deno.Command("id", { args: ["-u", SFTP_USER], stdout: "piped" })
      .output();
    return out.success ? Number(new TextDecoder().decode(out.stdout).trim()) : undefined;
  };
  let uid = await lookup();
  if (uid === undefined) {
    await run("useradd", [
      "--system",
      "--no-create-home",
      "--home-dir",
      "/nonexistent",
      "--shell",
      "/usr/sbin/nologin",
      SFTP_USER,
    ]);
    uid = await lookup();
  }
  const gid = Number((await run("id", ["-g", SFTP_USER])).trim());
  return { uid: uid!, gid };
}

/** Shared by every test process that runs an sshd at the same time (root only). */
const ACCOUNT_STATE_DIR = "/run/sluice-sshd-tests";

/**
 * Unlocks the test account for this server, with the password every server running at the same
 * time shares: test files run in parallel, and one that set a new password, or locked the
 * account when it stopped, would fail the logins of another. The last to release locks it.
 */
async function leaseAccount(): Promise<{ password: string; release(): Promise<void> }> {
  await Deno.mkdir(ACCOUNT_STATE_DIR, { recursive: true, mode: 0o700 });
  const me = join(ACCOUNT_STATE_DIR, `user-${Deno.pid}-${crypto.randomUUID()}`);
  const password = await withStateLock(async () => {
    const passwordFile = join(ACCOUNT_STATE_DIR, "password");
    if ((await liveUsers()).length > 0) {
      const shared = await Deno.readTextFile(passwordFile).catch(() => undefined);
      if (shared) {
        await Deno.writeTextFile(me, "");
        return shared;
      }
    }
    const fresh = crypto.randomUUID();
    await run("chpasswd", [], `${SFTP_USER}:${fresh}\n`);
    await run("usermod", ["-U", SFTP_USER]).catch(() => {}); // unlocked (a fresh account is)
    await Deno.writeTextFile(passwordFile, fresh, { mode: 0o600 });
    await Deno.writeTextFile(me, "");
    return fresh;
  });
  return {
    password,
    release: () =>
      withStateLock(async () => {
        await Deno.remove(me).catch(() => {});
        if ((await liveUsers()).length === 0) {
          await run("usermod", ["-L", SFTP_USER]).catch(() => {});
        }
      }),
  };
}

/** The lease files of live processes (those of processes gone are removed). */
async function liveUsers(): Promise<string[]> {
  const live: string[] = [];
  for await (const entry of Deno.readDir(ACCOUNT_STATE_DIR)) {
    const pid = /^user-(\d+)-/.exec(entry.name)?.[1];
    if (!pid) continue;
    let alive = true;
    try {
      Deno.statSync(`/proc/${pid}`);
    } catch {
      alive = false;
    }
    if (alive) live.push(entry.name);
    else await Deno.remove(join(ACCOUNT_STATE_DIR, entry.name)).catch(() => {});
  }
  return live;
}

async function withStateLock<T>(fn: () => Promise<T>): Promise<T> {
  const file = await Deno.open(join(ACCOUNT_STATE_DIR, "lock"), { create: true, write: true });
  try {
    await file.lock(true);
    return await fn();
  } finally {
    file.close();
  }
}

/**
 * Starts sshd on a free loopback port. Throws when it does not accept connections within 10 s.
 */
export async function startSshd(): Promise<SshServer> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-sshd-" });
  await Deno.chmod(dir, 0o755);
  const { uid, gid } = await ensureUser();
  const lease = await leaseAccount();

  const hostKey = join(dir, "host_ed25519");
  const userKey = join(dir, "user_ed25519");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", hostKey]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", userKey]);
  await Deno.copyFile(`${userKey}.pub`, join(dir, "authorized_keys"));
  const dataDir = join(dir, "data");
  await Deno.mkdir(dataDir, { mode: 0o755 });
  await Deno.chown(dataDir, uid, gid);
  // Privilege separation directory (absent until a system sshd ran once).
  await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });

  const port = freePort();
  const config = join(dir, "sshd_config");
  await Deno.writeTextFile(
    config,
    [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${hostKey}`,
      `PidFile none`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `StrictModes no`,
      `PasswordAuthentication yes`,
      `KbdInteractiveAuthentication no`,
      `PubkeyAuthentication yes`,
      `UsePAM no`,
      `AllowUsers ${SFTP_USER}`,
      `Subsystem sftp internal-sftp`,
      `ForceCommand internal-sftp`,
      `LogLevel ERROR`,
      "",
    ].join("\n"),
  );
  const hostKeyLine = (await Deno.readTextFile(`${hostKey}.pub`)).trim();

  let process = spawn(config);
  await waitListening(port, process);
  const server: SshServer = {
    host: "127.0.0.1",
    port,
    user: SFTP_USER,
    password: lease.password,
    userKeyPath: userKey,
    hostKeyLine,
    dataDir,
    get process() {
      return process;
    },
    async stop() {
      await killProcessTree(process);
      await lease.release();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    async restart() {
      await killProcessTree(process);
      process = spawn(config);
      await waitListening(port, process);
    },
  };
  return server;
}

/** sshd's log lines, kept for the message when it fails to start. */
const logs = new WeakMap<Deno.ChildProcess, Promise<string>>();

function spawn(config: string): Deno.ChildProcess {
  const process = new Deno.Command(SSHD_PATH, {
    args: ["-D", "-e", "-f", config],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  logs.set(process, new Response(process.stderr).text());
  return process;
}

/**
 * Kills sshd and its per-connection children (each by pid), so clients see the drop (as a crash
 * of the host would).
 */
export async function killProcessTree(process: Deno.ChildProcess): Promise<void> {
  const pids = descendants(process.pid);
  try {
    process.kill("SIGKILL");
  } catch { /* already exited */ }
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  await process.status;
}

function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/)
      .filter((s) => s !== "").map(Number);
  } catch { /* exited */ }
  return children.flatMap((child) => [child, ...descendants(child)]);
}

async function waitListening(port: number, process: Deno.ChildProcess): Promise<void> {
  let exited = false;
  process.status.then(() => exited = true);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) throw new Error(`sshd exited at start: ${await logs.get(process)}`);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port} within 10 s`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
