/**
 * Test helper: a TCP proxy on 127.0.0.1 that can cut connections mid-response, to prove that
 * clients survive dropped connections (e.g. a restore download cut in the middle of a file).
 *
 * @module
 */

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
  let victim: { id: number; budget: number } | undefined;

  const closeQuietly = (conn: Deno.Conn) => {
    if (!open.delete(conn)) return;
    try {
      conn.close();
    } catch { /* already closed */ }
  };

  /** How many of `n` bytes connection `id` may forward, and whether to cut it after them. */
  const allowance = (id: number, n: number): { allowed: number; cut: boolean } => {
    if (!victim && budgets.length > 0) victim = { id, budget: budgets.shift()! };
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
        let written = 0;
        while (written < allowed) written += await to.write(buffer.subarray(written, allowed));
        if (cut) break;
      }
    } catch { /* peer closed */ }
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
