/**
 * Red team on the `ping` probe (wire version 2): before `auth` it is refused like any frame but `auth` (UNAUTHORIZED,
 * the connection closed 1008, no `pong`), so an unauthenticated socket cannot keep itself alive with probes; after it,
 * the largest id the wire carries is echoed as sent.
 */
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { nobleSigner } from '@trickle/protocol/signer';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';

describe('ping, hostile', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('before auth: refused UNAUTHORIZED, closed 1008, never answered with pong', async () => {
    const ws = new WebSocket(w.hub!.url, ['trickle.v2']);
    const got: Message[] = [];
    ws.on('message', (data: Buffer) => got.push(decodeFrame(data)));
    await once(ws, 'open');
    expect(ws.protocol).toBe('trickle.v2');
    ws.send(encodeFrame({ t: 'ping', id: 3 }));
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(1008);
    expect(got.map((m) => m.t)).toEqual(['challenge', 'error']);
    expect(got[1]).toMatchObject({ t: 'error', id: 3, code: 'UNAUTHORIZED' });
  });

  it('after auth: the largest id (u32) is echoed as sent', async () => {
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[2]!));
    const max = 2 ** 32 - 1;
    d.send({ t: 'ping', id: max });
    expect(await d.next((m) => m.t === 'pong')).toEqual({ t: 'pong', id: max });
    d.ws.close();
  });
});
