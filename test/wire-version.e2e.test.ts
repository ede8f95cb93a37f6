/**
 * Wire protocol versions (spec §3, "Protocol version"): a client offers the versions it speaks as WebSocket
 * subprotocols, the hub answers with the newest it speaks of those, a client offering none speaks version 1, and a
 * client offering only versions the hub does not speak gets HTTP 426 with the hub's versions — which the device client
 * reports as UNSUPPORTED_PROTOCOL at once instead of retrying until its connect timeout.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TrickleClient } from '@trickle/client/client';
import { memoryChannelStore } from '@trickle/client/store';
import { decodeFrame, selectWireProtocol, WIRE_PROTOCOLS } from '@trickle/protocol/codec';
import { isTrickleError, type TrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import { createWorld, type World } from './helpers/harness.js';

/** Open a raw socket offering `protocols`; resolves with the answered subprotocol and the first frame's type. */
function rawOpen(url: string, protocols: string[]): Promise<{ protocol: string; first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.once('message', (data: Buffer) => {
      resolve({ protocol: ws.protocol, first: decodeFrame(data).t });
      ws.close();
    });
    ws.once('error', reject);
  });
}

/** Open a raw socket offering `protocols` and expect the upgrade refused: resolves with the HTTP answer. */
function rawRefused(url: string, protocols: string[]): Promise<{ status: number; versions: string | undefined }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.once('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? 0, versions: res.headers['trickle-protocols'] as string | undefined });
      res.resume();
      ws.terminate();
    });
    ws.once('open', () => reject(new Error('the upgrade was accepted')));
    ws.once('error', (e) => reject(e));
  });
}

describe('selectWireProtocol', () => {
  it('answers the first version it speaks that the client offered, none for none, null for only unknown ones', () => {
    expect(WIRE_PROTOCOLS).toEqual(['trickle.v3', 'trickle.v2', 'trickle.v1']);
    expect(selectWireProtocol('trickle.v4, trickle.v3, trickle.v2, trickle.v1')).toBe('trickle.v3');
    expect(selectWireProtocol('trickle.v1, trickle.v2')).toBe('trickle.v2');
    expect(selectWireProtocol('trickle.v2, trickle.v1', ['trickle.v1'])).toBe('trickle.v1');
    expect(selectWireProtocol(['trickle.v1'])).toBe('trickle.v1');
    expect(selectWireProtocol(undefined)).toBeUndefined();
    expect(selectWireProtocol(' , ')).toBeUndefined();
    expect(selectWireProtocol('trickle.v9')).toBeNull();
    expect(selectWireProtocol('trickle.v1,trickle.v2', ['trickle.v2', 'trickle.v1'])).toBe('trickle.v2');
  });
});

describe('wire protocol versions at a real hub', () => {
  let world: World;
  let url: string;
  beforeAll(async () => {
    world = await createWorld({ accounts: 3 });
    url = (await world.startHub()).url;
  });
  afterAll(() => world?.close());

  it('answers the newest version a client offers, and trickle.v1 to one offering only that among unknown ones', async () => {
    expect(await rawOpen(url, ['trickle.v4', 'trickle.v3', 'trickle.v2', 'trickle.v1'])).toEqual({
      protocol: 'trickle.v3',
      first: 'challenge',
    });
    expect(await rawOpen(url, ['trickle.v2', 'trickle.v1'])).toEqual({ protocol: 'trickle.v2', first: 'challenge' });
    expect(await rawOpen(url, ['trickle.v4', 'trickle.v1'])).toEqual({ protocol: 'trickle.v1', first: 'challenge' });
  });

  it('serves a client that offers no version as version 1, with no subprotocol in the answer', async () => {
    expect(await rawOpen(url, [])).toEqual({ protocol: '', first: 'challenge' });
  });

  it('refuses only-unknown versions with 426 naming its own, and goes on serving everyone else', async () => {
    expect(await rawRefused(url, ['trickle.v9'])).toEqual({
      status: 426,
      versions: 'trickle.v3, trickle.v2, trickle.v1',
    });
    // The device client offers WIRE_PROTOCOLS, opens and pays as usual on the same hub.
    const client = await world.client(2);
    const channel = await client.openChannel({ token: world.token, deposit: 1_000n });
    await channel.pay(7n);
    expect(channel.balance().paid).toBe(7n);
    await client.disconnect();
  });
});

describe('a device client at a hub that speaks none of its versions', () => {
  let server: Server;
  let url: string;
  let upgrades = 0;
  beforeAll(async () => {
    // What a hub of a later wire version only answers (the same answer the hub above gives to trickle.v9).
    server = createServer((_req, res) => res.end());
    server.on('upgrade', (req, socket) => {
      upgrades++;
      expect(req.headers['sec-websocket-protocol']).toBe(WIRE_PROTOCOLS.join(','));
      socket.end('HTTP/1.1 426 Upgrade Required\r\ntrickle-protocols: trickle.v4\r\ncontent-length: 0\r\n\r\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it('fails connect with UNSUPPORTED_PROTOCOL after one attempt, not at its connect timeout', async () => {
    const started = Date.now();
    const e: unknown = await TrickleClient.connect({
      url,
      signer: nobleSigner(`0x${'22'.repeat(32)}`),
      store: memoryChannelStore(),
      connectTimeoutMs: 60_000,
    }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(isTrickleError(e, 'UNSUPPORTED_PROTOCOL')).toBe(true);
    expect((e as TrickleError).details).toEqual({ offered: ['trickle.v3', 'trickle.v2', 'trickle.v1'] });
    expect(upgrades).toBe(1);
    expect(Date.now() - started).toBeLessThan(30_000);
  });
});
