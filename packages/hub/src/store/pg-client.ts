import type pg from 'pg';

/**
 * Run `fn` on a connection checked out of `pool`, then give it back, discarded if it broke meanwhile: the server
 * dropped it (a checked-out connection emits 'error' on its client — the pool only listens on idle ones — and
 * without a listener that would end the process; the query in flight fails too, and that is what is reported), or
 * `fn` called `broke` (an error that leaves the connection in an unknown state). A failed checkout throws what
 * `checkoutFailed` makes of its error.
 */
export async function withPoolClient<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient, broke: (e: unknown) => void) => Promise<T>,
  checkoutFailed: (e: unknown) => Error,
): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (e) {
    throw checkoutFailed(e);
  }
  let broken: unknown;
  const broke = (e: unknown) => {
    broken ??= e;
  };
  client.on('error', broke);
  try {
    return await fn(client, broke);
  } finally {
    client.off('error', broke);
    client.release(broken instanceof Error ? broken : undefined);
  }
}
