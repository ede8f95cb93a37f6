/**
 * A routed payment whose receipt never comes (the payee holds the hub's credit and never answers) is answered
 * `TIMEOUT` after the client's `routeTimeoutMs`, whatever other timers the channel asks for meanwhile. The device's
 * channel engine asks its shell for ticks (a routed payment's deadline, a yield's end, a lock's expiry) and the client
 * keeps one timer: a later request (here a lock expiring in ten minutes) once replaced the deadline, and the engine's
 * tick did not ask for it again, so such a pay() waited for ever.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { payeeAsRawDevice } from './helpers/raw-device.js';

describe('a routed payment whose receipt never comes', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  it('is answered TIMEOUT after routeTimeoutMs, though a lock asked for a later tick meanwhile', async () => {
    const { ach, payee, raw } = await payeeAsRawDevice(w, 2, 3, { routeTimeoutMs: 1_500 });
    const t0 = Date.now();
    const routed = ach.pay(700n, { to: payee.address }).then(
      () => 'delivered',
      (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
    );
    // The hub proposes the credit to the payee, which never answers: the route stays pending, no receipt.
    await raw.next((m) => m.t === 'update');
    // A conditional payment to the hub, expiring in ten minutes: once in the channel, it asks for a tick then.
    const lock = ach.pay(5n, { lock: { hash: hashPreimage(`0x${'42'.repeat(32)}` as Bytes32), expiresIn: 600 } });
    await lock.locked;
    expect(await routed).toBe('TIMEOUT');
    expect(Date.now() - t0).toBeLessThan(10_000); // not at the lock's expiry
    raw.ws.close();
  });
});
