/**
 * A PUT of a local file with an exact Content-Length. Deno's `fetch` sends every stream body
 * chunked (it ignores a Content-Length header then), which common WebDAV setups refuse (411) or
 * silently store as an empty file; `node:http` sends the declared length.
 *
 * @module
 */

import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createReadStream } from "node:fs";

/** The answer to an upload: status and (small) body text. */
export interface UploadResponse {
  status: number;
  text: string;
}

/**
 * Sends the file at `path` (`size` bytes) as the body of `method url`.
 * @throws {Error} on a network error, a timeout waiting for the answer, or an unreadable file.
 */
export function uploadFile(
  url: URL,
  method: string,
  headers: Record<string, string>,
  path: string,
  size: number,
  timeoutMs: number,
): Promise<UploadResponse> {
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise<UploadResponse>((resolve, reject) => {
    const request = send(url, {
      method,
      headers: { ...headers, "Content-Length": String(size) },
    }, (response) => {
      const chunks: Uint8Array[] = [];
      response.on("data", (chunk: Uint8Array) => chunks.push(chunk));
      response.on("end", () => {
        const text = new TextDecoder().decode(concat(chunks));
        resolve({ status: response.statusCode ?? 0, text });
      });
      response.on("error", reject);
    });
    request.setTimeout(timeoutMs, () => request.destroy(new Error("timed out")));
    request.on("error", reject);
    const file = createReadStream(path);
    file.on("error", (err) => request.destroy(err));
    file.pipe(request);
  });
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
