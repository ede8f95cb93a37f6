import { describe, expect, it } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { recoverReceiptSigner, resourceHash } from '@trickle/protocol/receipt';
import { nobleSigner, nobleVerifier, signatureToHex } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import { RouteExtras } from './route-extras.js';
import type { RouteRecord } from './store/types.js';

const hub = nobleSigner(`0x${'11'.repeat(32)}`);
const payer = nobleSigner(`0x${'22'.repeat(32)}`).address;
const payee = nobleSigner(`0x${'33'.repeat(32)}`).address;
const token = '0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512' as Address;
const separator = domainSeparator(trickleDomain(31337n, '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address));
const id = (b: string) => `0x${b.repeat(32)}` as Bytes32;

function setup(maxPending?: number, maxUndelivered?: number) {
  const sent: { to: Address; msg: Message }[] = [];
  const online = new Set<Address>([payer, payee]);
  const extras = new RouteExtras({
    signer: hub,
    separator,
    send: (to, msg) => online.has(to) && sent.push({ to, msg }) > 0,
    maxPending,
    maxUndelivered,
  });
  return { extras, sent, online };
}

describe('RouteExtras', () => {
  it('signs the receipt a delivered route asked for, binding payer, payee, token, amount, resource, nonce, expiry', () => {
    const { extras } = setup();
    const receipt = { resource: resourceHash('sensor-7/reading'), nonce: id('ab'), expiry: 1_900_000_000n };
    extras.note(payer, token, { to: payee, amount: 1_000n, paymentId: id('01'), receipt });
    const out = extras.outgoing({ t: 'receipt', id: 0, paymentId: id('01'), delivered: true });
    expect(out.t === 'receipt' && out.hubSig).toBeInstanceOf(Uint8Array);
    const sig = signatureToHex((out as Extract<Message, { t: 'receipt' }>).hubSig!);
    const signed = { receipt: { payer, payee, token, amount: 1_000n, ...receipt, paymentId: id('01') }, sig };
    expect(recoverReceiptSigner(nobleVerifier, separator, signed)).toBe(hub.address);
    expect(extras.pending).toBe(0);
  });

  it('restores the extras of a route from its store record (JSON-decoded) when they are not noted: receipt and stream', () => {
    const { extras, sent } = setup();
    const receipt = { resource: resourceHash('sensor-7/reading'), nonce: id('ab'), expiry: 1_900_000_000n };
    const stored = parseJson<RouteRecord>(
      stringifyJson({
        paymentId: id('0a'),
        from: payer,
        to: payee,
        fromChannel: id('ee'),
        amount: 1_000n,
        status: 'pending',
        receipt,
        stream: { streamId: id('5a'), ratePerSecond: 10n, total: 30n, final: false },
        token,
      }),
    );
    extras.restore(stored);
    extras.restore({ ...stored, paymentId: id('0b'), receipt: undefined, stream: undefined }); // nothing to restore
    expect(extras.pending).toBe(1);
    const out = extras.outgoing({ t: 'receipt', id: 0, paymentId: id('0a'), delivered: true });
    const sig = signatureToHex((out as Extract<Message, { t: 'receipt' }>).hubSig!);
    const signed = { receipt: { payer, payee, token, amount: 1_000n, ...receipt, paymentId: id('0a') }, sig };
    expect(recoverReceiptSigner(nobleVerifier, separator, signed)).toBe(hub.address);
    expect(sent).toEqual([
      {
        to: payee,
        msg: expect.objectContaining({
          t: 'stream',
          stream: { streamId: id('5a'), ratePerSecond: 10n, total: 30n, final: false },
        }),
      },
    ]);
  });

  it('signs nothing for a refunded route, and leaves frames of routes without extras unchanged', () => {
    const { extras, sent } = setup();
    extras.note(payer, token, {
      to: payee,
      amount: 5n,
      paymentId: id('02'),
      receipt: { resource: id('cc'), nonce: id('dd'), expiry: 1n },
    });
    const refunded: Message = { t: 'receipt', id: 0, paymentId: id('02'), delivered: false };
    expect(extras.outgoing(refunded)).toBe(refunded);
    extras.note(payer, token, { to: payee, amount: 5n, paymentId: id('03') }); // no extras: not kept
    expect(extras.pending).toBe(0);
    const plain: Message = { t: 'receipt', id: 0, paymentId: id('03'), delivered: true };
    expect(extras.outgoing(plain)).toBe(plain);
    expect(sent).toHaveLength(0);
  });

  it('announces a delivered stream tick to the payee, not a refunded one', () => {
    const { extras, sent } = setup();
    const stream = { streamId: id('5e'), ratePerSecond: 100n, total: 40n, final: false };
    extras.note(payer, token, { to: payee, amount: 10n, paymentId: id('04'), stream });
    extras.note(payer, token, { to: payee, amount: 10n, paymentId: id('05'), stream });
    extras.outgoing({ t: 'receipt', id: 0, paymentId: id('04'), delivered: true });
    extras.outgoing({ t: 'receipt', id: 0, paymentId: id('05'), delivered: false });
    expect(sent).toEqual([
      { to: payee, msg: { t: 'stream', id: 0, from: payer, paymentId: id('04'), amount: 10n, stream } },
    ]);
  });

  it('keeps at most maxPending notes, dropping the oldest', () => {
    const { extras } = setup(2);
    for (const b of ['0a', '0b', '0c'])
      extras.note(payer, token, {
        to: payee,
        amount: 1n,
        paymentId: id(b),
        stream: { streamId: id('5e'), ratePerSecond: 1n, total: 1n, final: false },
      });
    expect(extras.pending).toBe(2);
    const dropped: Message = { t: 'receipt', id: 0, paymentId: id('0a'), delivered: true };
    expect(extras.outgoing(dropped)).toBe(dropped);
    expect(extras.pending).toBe(2);
  });

  it('a device flooding routes that are then refused crowds out only its own notes, never another payer’s receipt', () => {
    const { extras } = setup(100);
    const receipt = { resource: resourceHash('sensor-7/reading'), nonce: id('ab'), expiry: 1_900_000_000n };
    extras.note(payer, token, { to: payee, amount: 1_000n, paymentId: id('01'), receipt });
    // Routes pass the router's check (and are noted) before their update's signature is verified: a flooder's
    // refused updates leave notes that never finish.
    const flooder = nobleSigner(`0x${'44'.repeat(32)}`).address;
    for (let i = 0; i < 1_000; i++) {
      const paymentId = `0x${i.toString(16).padStart(64, '0')}` as Bytes32;
      extras.note(flooder, token, { to: payee, amount: 1n, paymentId, receipt: { ...receipt, nonce: paymentId } });
    }
    expect(extras.pending).toBe(100);
    const out = extras.outgoing({ t: 'receipt', id: 0, paymentId: id('01'), delivered: true });
    expect(out.t === 'receipt' && out.hubSig).toBeInstanceOf(Uint8Array);
    expect(extras.pending).toBe(99);
  });
});

describe('RouteExtras: receipts for payers that were offline', () => {
  it('keeps a receipt the payer could not get, with its signature, and sends it when the payer connects again', () => {
    const { extras, sent, online } = setup();
    const receipt = { resource: resourceHash('r'), nonce: id('ab'), expiry: 1_900_000_000n };
    extras.note(payer, token, { to: payee, amount: 7n, paymentId: id('06'), receipt });
    online.delete(payer);
    expect(extras.deliver(payer, { t: 'receipt', id: 0, paymentId: id('06'), delivered: true })).toBe(false);
    expect(extras.deliver(payer, { t: 'receipt', id: 0, paymentId: id('07'), delivered: false })).toBe(false);
    expect(extras.undelivered).toBe(2);
    extras.deviceConnected(payee); // somebody else: nothing for it
    expect(sent).toHaveLength(0);
    online.add(payer);
    extras.deviceConnected(payer);
    expect(extras.undelivered).toBe(0);
    expect(
      sent.map((x) => [
        x.to,
        x.msg.t === 'receipt' && x.msg.paymentId,
        x.msg.t === 'receipt' && x.msg.hubSig !== undefined,
      ]),
    ).toEqual([
      [payer, id('06'), true],
      [payer, id('07'), false],
    ]);
  });

  it('keeps at most maxUndelivered, the oldest dropped first, and nothing that was sent', () => {
    const { extras, online } = setup(undefined, 2);
    expect(extras.deliver(payer, { t: 'receipt', id: 0, paymentId: id('08'), delivered: true })).toBe(true);
    online.delete(payer);
    for (const b of ['09', '0d', '0e'])
      extras.deliver(payer, { t: 'receipt', id: 0, paymentId: id(b), delivered: true });
    expect(extras.undelivered).toBe(2);
    expect(
      extras.deliver(payee, {
        t: 'stream',
        id: 0,
        from: payer,
        paymentId: id('0f'),
        amount: 1n,
        stream: { streamId: id('5e'), ratePerSecond: 1n, total: 1n, final: false },
      }),
    ).toBe(true);
    expect(extras.undelivered).toBe(2);
  });

  it('a payer going offline after every payment crowds out only its own kept receipts, not an honest payer’s', () => {
    const { extras, sent, online } = setup(undefined, 10);
    const receipt = { resource: resourceHash('r'), nonce: id('ab'), expiry: 1_900_000_000n };
    extras.note(payer, token, { to: payee, amount: 7n, paymentId: id('06'), receipt });
    online.delete(payer);
    extras.deliver(payer, { t: 'receipt', id: 0, paymentId: id('06'), delivered: true });
    // Another device pays a colluding one (the money stays theirs) and is offline each time its receipt is sent.
    const flooder = nobleSigner(`0x${'44'.repeat(32)}`).address;
    for (let i = 0; i < 100; i++) {
      const paymentId = `0x${(i + 1).toString(16).padStart(64, '0')}` as Bytes32;
      extras.deliver(flooder, { t: 'receipt', id: 0, paymentId, delivered: true });
    }
    expect(extras.undelivered).toBe(10);
    online.add(payer);
    extras.deviceConnected(payer);
    expect(sent.map((x) => x.msg.t === 'receipt' && x.msg.paymentId)).toEqual([id('06')]);
    expect(sent[0]!.msg.t === 'receipt' && sent[0]!.msg.hubSig).toBeInstanceOf(Uint8Array);
    expect(extras.undelivered).toBe(9);
  });
});
