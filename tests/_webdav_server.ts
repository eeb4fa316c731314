/**
 * Test support: a real WebDAV server (npm `webdav-server`, a full RFC 4918 implementation with
 * dead properties) serving a local directory, with Basic authentication, in its own process.
 *
 *     deno run -A tests/_webdav_server.ts PORT ROOT_DIR USER PASSWORD
 *
 * Prints `listening` once it accepts requests. {@linkcode startWebDAVServer} starts it.
 *
 * @module
 */

import { join } from "node:path";

/** A running WebDAV server process. */
export interface WebDAVServer {
  /** `http://127.0.0.1:PORT` */
  url: string;
  port: number;
  user: string;
  password: string;
  /** The directory the server serves (raw access for tests). */
  root: string;
  /** The server process (its pid is the one signalled). */
  process: Deno.ChildProcess;
  /** Kills the server and starts it again on the same port and directory. */
  restart(): Promise<void>;
  /** Kills the server (by pid) and removes its directory. */
  stop(): Promise<void>;
}

/** Starts the server on a free loopback port serving a fresh temp directory. */
export async function startWebDAVServer(): Promise<WebDAVServer> {
  const root = await Deno.makeTempDir({ prefix: "sluice-webdav-" });
  const { freePort } = await import("./_sluice.ts");
  const port = freePort();
  const user = "sluice";
  const password = crypto.randomUUID();
  let process = await spawn(port, root, user, password);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    user,
    password,
    root,
    get process() {
      return process;
    },
    async restart() {
      await kill(process);
      process = await spawn(port, root, user, password);
    },
    async stop() {
      await kill(process);
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}

async function spawn(
  port: number,
  root: string,
  user: string,
  password: string,
): Promise<Deno.ChildProcess> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, String(port), root, user, password],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(process.stderr).text();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = setTimeout(() => process.kill("SIGKILL"), 20_000);
  try {
    while (!seen.includes("listening")) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`the WebDAV server exited at start: ${await stderr}`);
      seen += value;
    }
  } finally {
    clearTimeout(deadline);
  }
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  return process;
}

async function kill(process: Deno.ChildProcess): Promise<void> {
  try {
    process.kill("SIGKILL");
  } catch { /* already exited */ }
  await process.status;
}

if (import.meta.main) {
  const [port, root, user, password] = Deno.args;
  const { v2: webdav } = await import("webdav-server");
  const users = new webdav.SimpleUserManager();
  const account = users.addUser(user, password, false);
  const privileges = new webdav.SimplePathPrivilegeManager();
  privileges.setRights(account, "/", ["all"]);
  const server = new webdav.WebDAVServer({
    hostname: "127.0.0.1",
    port: Number(port),
    httpAuthentication: new webdav.HTTPBasicAuthentication(users, "sluice-test"),
    privilegeManager: privileges,
    rootFileSystem: new webdav.PhysicalFileSystem(join(root)),
  });
  await new Promise<void>((resolve) => server.start(() => resolve()));
  console.log("listening");
}
