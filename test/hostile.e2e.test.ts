import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { stateDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner, type Signer } from '@trickle/protocol/signer';
import type { Message } from '@trickle/protocol/codec';
import type { ChannelId, State } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';

/**
 * Every kind of bad input gets its typed code, leaves the channel state as it was, and the hub keeps serving an
 * honest device streaming on another connection throughout.
 */
describe('hostile input', () => {
  let w: World;
  let victim: TrickleClient;
  let vch: ClientChannel;
  let honest: ClientChannel;
  let signer: Signer;
  let sep: Uint8Array;
  let raw: RawDevice;
  let streaming = true;
  let streamed = 0;
  let streamLoop: Promise<void>;

  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ limits: { maxFrameBytes: 4096, maxMalformedFrames: 5 } });
    victim = await w.client(2);
    vch = await victim.openChannel({ token: w.token, deposit: 1_000_000n });
    await vch.pay(1_000n);
    await vch.pay(2_000n); // hub latest: version 2, paidByDevice 3000
    const h = await w.client(3);
    honest = await h.openChannel({ token: w.token, deposit: 100_000_000n });
    streamLoop = (async () => {
      while (streaming && streamed < 20_000) {
        await honest.pay(1n);
        streamed++;
      }
    })();
    signer = nobleSigner(w.chain.accounts[2]!);
    sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    victim.disconnect();
    raw = await RawDevice.connect(w.hub!.url, signer);
  });
  afterAll(async () => {
    streaming = false;
    await streamLoop;
    raw?.close();
    await w?.close();
  });

  const hubState = (id: ChannelId) => w.hub!.channels.get(id)!.latest;
  const signed = (s: State, by: Signer = signer) => ({ state: s, sig: by.signDigest(stateDigest(sep, s)) });
  const base = (): State => hubState(vch.channelId).state;
  let nextId = 100;
  async function expectReject(state: State, sig: Uint8Array, code: string) {
    const before = hubState(vch.channelId);
    const id = nextId++;
    raw.send({ t: 'update', id, state, sig });
    const reply = (await raw.next(
      (m) => (m.t === 'reject' || m.t === 'ack' || m.t === 'error') && m.id === id,
    )) as Message;
    expect(reply.t === 'reject' || reply.t === 'error').toBe(true);
    expect((reply as { code: string }).code).toBe(code);
    expect(hubState(vch.channelId)).toEqual(before);
  }

  it('replay of an old update: STALE_VERSION', async () => {
    const s = { ...base(), version: 1n, paidByDevice: 1_000n };
    const { sig } = signed(s);
    await expectReject(s, sig, 'STALE_VERSION');
  });
  it('replay of the current update is re-acked, idempotently', async () => {
    const s = base();
    const id = nextId++;
    raw.send({ t: 'update', id, ...signed(s) });
    const reply = await raw.next((m) => m.id === id);
    expect(reply.t).toBe('ack');
  });
  it('equivocation: a different state at the current version', async () => {
    const s = { ...base(), paidByDevice: base().paidByDevice + 1n };
    await expectReject(s, signed(s).sig, 'EQUIVOCATION');
  });
  it('counter decrease', async () => {
    const s = { ...base(), version: base().version + 1n, paidByDevice: base().paidByDevice - 1n };
    await expectReject(s, signed(s).sig, 'COUNTER_DECREASED');
  });
  it('raising the hub counter: WRONG_PAYER', async () => {
    const s = { ...base(), version: base().version + 1n, paidByHub: 5n };
    await expectReject(s, signed(s).sig, 'WRONG_PAYER');
  });
  it('overspend', async () => {
    const s = { ...base(), version: base().version + 1n, paidByDevice: 1_000_001n };
    await expectReject(s, signed(s).sig, 'INSUFFICIENT_FUNDS');
  });
  it('bad signature', async () => {
    const s = { ...base(), version: base().version + 1n, paidByDevice: base().paidByDevice + 1n };
    await expectReject(s, signed(s, nobleSigner(`0x${'77'.repeat(32)}` as never)).sig, 'BAD_SIGNATURE');
  });
  it('update for a foreign channel (the honest device’s): WRONG_CHANNEL', async () => {
    const foreign = {
      ...honest.latest.state,
      version: honest.latest.state.version + 1000n,
      paidByDevice: honest.latest.state.paidByDevice + 1n,
    };
    const before = w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice;
    const id = nextId++;
    raw.send({ t: 'update', id, ...signed(foreign) });
    const reply = await raw.next((m) => m.id === id);
    expect((reply as { code: string }).code).toBe('WRONG_CHANNEL');
    expect(w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice >= before).toBe(true);
  });
  it('a valid update after all that is accepted', async () => {
    const s = { ...base(), version: base().version + 1n, paidByDevice: base().paidByDevice + 7n };
    const id = nextId++;
    raw.send({ t: 'update', id, ...signed(s) });
    const reply = await raw.next((m) => m.id === id);
    expect(reply.t).toBe('ack');
    expect(hubState(vch.channelId).state).toEqual(s);
  });
  it('garbage, truncated and unknown-field frames: MALFORMED error frames; state unchanged', async () => {
    const before = hubState(vch.channelId);
    const good = new Packr({ useRecords: false }).pack({ t: 'ok', id: 9, extra: 1 });
    raw.sendRaw(new Uint8Array([0xc1, 0xff, 0x00]));
    raw.sendRaw(good.subarray(0, good.length - 2));
    raw.sendRaw(good);
    for (let k = 0; k < 3; k++) {
      const e = await raw.next((m) => m.t === 'error');
      expect((e as { code: string }).code).toBe('MALFORMED');
    }
    expect(hubState(vch.channelId)).toEqual(before);
  });
  it('a peer that keeps sending garbage is disconnected with 1007', async () => {
    raw.sendRaw('text frames are not protocol');
    raw.sendRaw(new Uint8Array([0xc1]));
    expect(await raw.closed()).toBe(1007);
  });
  it('an oversized frame closes the connection with 1009', async () => {
    const d = await RawDevice.connect(w.hub!.url, signer);
    d.sendRaw(new Uint8Array(5000));
    expect(await d.closed()).toBe(1009);
  });
  it('a wrong handshake is refused with 1008, and frames before auth with UNAUTHORIZED', async () => {
    const d = await RawDevice.connect(w.hub!.url);
    d.send({ t: 'sync', id: 3, channelId: vch.channelId, latest: null });
    const e = await d.next((m) => m.t === 'error');
    expect((e as { code: string }).code).toBe('UNAUTHORIZED');
    expect(await d.closed()).toBe(1008);
  });
  it('the honest device kept streaming throughout, and its totals match the hub', async () => {
    streaming = false;
    await streamLoop;
    expect(streamed).toBeGreaterThan(0);
    expect(w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice).toBe(BigInt(streamed));
    expect(honest.latest.state.paidByDevice).toBe(BigInt(streamed));
  });
  it('/metrics counts rejects by code; /health answers', async () => {
    const port = w.hub!.port;
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const code of ['STALE_VERSION', 'EQUIVOCATION', 'COUNTER_DECREASED', 'INSUFFICIENT_FUNDS', 'BAD_SIGNATURE'])
      expect(text).toContain(`outcome="${code}"`);
    expect(text).toMatch(/trickle_store_commit_seconds_bucket/);
    expect(text).toMatch(/trickle_connections \d/);
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as {
      status: string;
      channels: number;
    };
    expect(health.status).toBe('ok');
    expect(health.channels).toBe(2);
  });
});
