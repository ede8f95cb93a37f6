import { afterAll, beforeAll } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './harness.js';

/** A world with its hub running, for the describe block this is called in (closed after it). */
export function worldWithHub(): () => World {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());
  return () => w;
}

/** How `p` settles: 'resolved', the TrickleError's code, or 'untyped …' for any other rejection. */
export const outcomeCode = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (e: unknown) => (isTrickleError(e) ? e.code : `untyped ${String(e)}`),
  );
