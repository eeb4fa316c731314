/**
 * Bounded concurrency for the many small requests of a listing, a batch delete or a header
 * read (SFTP and WebDAV have no batch calls), and for callers that scan replica files.
 *
 * @module
 */

/**
 * `fn` over `items`, at most `limit` at once (at least one), results in input order. The first
 * rejection rejects the whole call once the calls in flight have settled their current item.
 */
export async function mapConcurrently<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
