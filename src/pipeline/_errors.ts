/**
 * Errors crossing the worker boundary come back as the class the in-thread codec would have
 * thrown, with the same message, so callers cannot tell where the work ran.
 *
 * @module
 */

import { LTXChecksumError, LTXError, LTXFormatError } from "../ltx/mod.ts";
import type { WireError } from "./_protocol.ts";

/** `err` as it crosses to the main thread: its class name and message. */
export function toWire(err: unknown): WireError {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: "Error", message: String(err) };
}

/**
 * Rebuilds `wire` as an {@linkcode LTXError} subclass or `Deno.errors.NotFound`, or a plain
 * `Error` of the same name.
 */
export function fromWire(wire: WireError): Error {
  switch (wire.name) {
    case "LTXChecksumError":
      return new LTXChecksumError(wire.message);
    case "LTXFormatError":
      return new LTXFormatError(wire.message);
    case "LTXError":
      return new LTXError(wire.message);
    case "NotFound":
      // A file a worker opened itself was missing: the caller may read another copy.
      return new Deno.errors.NotFound(wire.message);
  }
  const err = new Error(wire.message);
  err.name = wire.name;
  return err;
}
