/**
 * Test helper: a TCP proxy on 127.0.0.1 that can cut connections mid-response, to prove that
 * clients survive dropped connections (e.g. a restore download cut in the middle of a file),
 * and inject storage faults for the chaos campaigns: refuse every connection (server down),
 * answer a fraction of new connections with HTTP 500 or reset them, and delay traffic.
 *
 * @module
 */

/** Faults applied to connections accepted from now on (see {@linkcode FaultProxy.setFaults}). */
export interface ProxyFaults {
  /** Close every new connection at once, like a server that is down. */
  down?: boolean;
  /** Fraction (0…1) of new connections answered `500 Internal Server Error` and closed. */
  failRate?: number;
  /** The answer of a failed connection instead of 500 InternalError, e.g. Tigris' 408. */
  failWith?: { status: number; reason: string; code: string };
  /** Fraction (0…1) of new connections closed after the request arrived, without an answer. */
  resetRate?: number;
  /** Delay before forwarding each chunk, in both directions, ms. */
  delayMs?: number;
  /** Random source for the rates (default Math.random), for reproducible runs. */
  random?: () => number;
}

/** A running proxy. */
export interface FaultProxy {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections cut so far. */
  readonly cuts: number;
  /**
   * Arms faults: the next `times` responses (server → client traffic, counted from now, one
   * connection at a time) are cut after `afterBytes` bytes by closing both sides. An array
   * gives one byte budget per response, in order.
   */
  cutResponses(afterBytes: number | number[], times?: number): void;
  /** Disarms any pending fault. */
  reset(): void;
  /** Applies `faults` to connections accepted from now on; `{}` clears them. */
  setFaults(faults: ProxyFaults): void;
  /** Closes every open connection (clients reconnect, and meet the current faults). */
  dropAll(): void;
  /** Connections answered 500, reset, or refused because of {@linkcode setFaults}. */
  readonly injected: { failed: number; reset: number; refused: number };
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts a proxy to `target` (e.g. `http://127.0.0.1:4566`) on a free loopback port. */
export function startFaultProxy(target: string): FaultProxy {
  const { hostname, port: targetPort } = new URL(target);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let connections = 0;
  let cuts = 0;
  /** Byte budgets of the responses still to cut, in order. */
  let budgets: number[] = [];
  /** The connection currently being cut and its remaining byte budget. */
  let victim: { id: number; budget: number; initial: number } | undefined;
  let faults: ProxyFaults = {};
  const injected = { failed: 0, reset: 0, refused: 0 };

  const closeQuietly = (conn: Deno.Conn) => {
    if (!open.delete(conn)) return;
    try {
      conn.close();
    } catch { /* already closed */ }
  };

  /** How many of `n` bytes connection `id` may forward, and whether to cut it after them. */
  const allowance = (id: number, n: number): { allowed: number; cut: boolean } => {
    if (!victim && budgets.length > 0) {
      const budget = budgets.shift()!;
      victim = { id, budget, initial: budget };
    }
    if (!victim || victim.id !== id) return { allowed: n, cut: false };
    if (n < victim.budget) {
      victim.budget -= n;
      return { allowed: n, cut: false };
    }
    const allowed = victim.budget;
    victim = undefined;
    cuts++;
    return { allowed, cut: true };
  };

  const pipe = async (from: Deno.Conn, to: Deno.Conn, id: number | undefined) => {
    const buffer = new Uint8Array(16 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        const { allowed, cut } = id === undefined ? { allowed: n, cut: false } : allowance(id, n);
        if (faults.delayMs) await new Promise((r) => setTimeout(r, faults.delayMs));
        let written = 0;
        while (written < allowed) written += await to.write(buffer.subarray(written, allowed));
        if (cut) break;
      }
    } catch { /* peer closed */ }
    // A connection that ended before its budget ran out was not cut: the next one gets the
    // budget (a client may read its large files on another connection than the first).
    if (id !== undefined && victim?.id === id) {
      budgets.unshift(victim.initial);
      victim = undefined;
    }
    closeQuietly(from);
    closeQuietly(to);
  };

  const track = (task: Promise<void>) => {
    tasks.add(task);
    task.finally(() => tasks.delete(task));
  };

  const accept = async () => {
    for await (const client of listener) {
      const id = ++connections;
      open.add(client);
      track((async () => {
        if (await injectFault(client)) return;
        let upstream: Deno.Conn;
        try {
          upstream = await Deno.connect({ hostname, port: Number(targetPort) });
        } catch {
          closeQuietly(client);
          return;
        }
        open.add(upstream);
        await Promise.all([pipe(client, upstream, undefined), pipe(upstream, client, id)]);
      })());
    }
  };
  /** Applies the connection-level faults; true when `client` was dealt with. */
  const injectFault = async (client: Deno.Conn): Promise<boolean> => {
    if (faults.down) {
      injected.refused++;
      closeQuietly(client);
      return true;
    }
    const random = faults.random ?? Math.random;
    const fail = (faults.failRate ?? 0) > 0 && random() < faults.failRate!;
    const reset = !fail && (faults.resetRate ?? 0) > 0 && random() < faults.resetRate!;
    if (!fail && !reset) return false;
    // Wait for the request head, so the client has sent something before it hears back.
    const buffer = new Uint8Array(16 * 1024);
    let head = "";
    try {
      while (!head.includes("\r\n\r\n") && head.length < 64 * 1024) {
        const n = await client.read(buffer);
        if (n === null) break;
        head += new TextDecoder().decode(buffer.subarray(0, n));
      }
      if (fail) {
        const { status, reason, code } = faults.failWith ??
          { status: 500, reason: "Internal Server Error", code: "InternalError" };
        const body = `<Error><Code>${code}</Code><Message>injected</Message></Error>`;
        const response = `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/xml\r\n` +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
        const bytes = new TextEncoder().encode(response);
        for (let at = 0; at < bytes.length;) at += await client.write(bytes.subarray(at));
      }
    } catch { /* client gone */ }
    if (fail) injected.failed++;
    else injected.reset++;
    closeQuietly(client);
    return true;
  };

  const accepting = accept().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get connections() {
      return connections;
    },
    get cuts() {
      return cuts;
    },
    cutResponses(afterBytes: number | number[], times = 1) {
      budgets = Array.isArray(afterBytes) ? [...afterBytes] : Array(times).fill(afterBytes);
      victim = undefined;
    },
    reset() {
      budgets = [];
      victim = undefined;
    },
    setFaults(next: ProxyFaults) {
      faults = { ...next };
    },
    dropAll() {
      for (const conn of [...open]) closeQuietly(conn);
    },
    get injected() {
      return { ...injected };
    },
    async close() {
      try {
        listener.close();
      } catch { /* already closed */ }
      for (const conn of [...open]) closeQuietly(conn);
      await accepting;
      await Promise.all([...tasks]);
    },
  };
}
