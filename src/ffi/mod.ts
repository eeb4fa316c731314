/**
 * libc through Deno's FFI, for the few system calls Deno has no API for (or none without a
 * promise or an exception per call): `pread`/`lseek` on SQLite's files, inotify, `getdents64`,
 * `statx`. Every user declares only the symbols it calls; this module decides once per symbol
 * set whether FFI can be used at all (Linux, the `ffi` permission, a loadable libc), and callers
 * fall back to Deno's own APIs where it cannot.
 *
 * @module
 */

/** The bound symbols of libc for a symbol set `S`. */
export type LibCSymbols<S extends Deno.ForeignLibraryInterface> = Deno.DynamicLibrary<S>["symbols"];

/**
 * A loader of libc with `symbols`: the first call opens it (`Deno.dlopen("libc.so.6")`), later
 * calls return the same bindings. The loader returns null, and keeps returning null, where FFI
 * is not possible: not Linux, no `ffi` permission, or libc lacks a symbol.
 */
export function lazyLibC<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): () => LibCSymbols<S> | null {
  let loaded: LibCSymbols<S> | null | undefined;
  return () => {
    if (loaded !== undefined) return loaded;
    loaded = null;
    if (Deno.build.os !== "linux") return loaded;
    try {
      if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return loaded;
      loaded = Deno.dlopen("libc.so.6", symbols).symbols;
    } catch {
      loaded = null;
    }
    return loaded;
  };
}
