import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Receipt } from '@trickle/protocol/receipt';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { decodePurchase, encodePurchase } from './purchases.js';
import { deadPid } from './pids.fixture.js';
import { fileChannelStore, memoryChannelStore } from './store.js';
import { tempDirs } from '../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-purchases-');
const b32 = (byte: string) => `0x${byte.repeat(32)}` as Bytes32;
const purchase = (id: string, expiry = 1_900_000_000n): Receipt => ({
  payer: `0x${'1'.repeat(40)}` as Address,
  payee: `0x${'2'.repeat(40)}` as Address,
  token: `0x${'3'.repeat(40)}` as Address,
  amount: (1n << 200n) + 7n,
  resource: b32('04'),
  nonce: b32('05'),
  expiry,
  paymentId: b32(id),
});

describe('receipt purchases in a device store', () => {
  it('encode/decode round-trips exactly; anything else is MALFORMED', () => {
    expect(decodePurchase(encodePurchase(purchase('aa')))).toEqual(purchase('aa'));
    for (const bad of [
      '',
      '[]',
      'null',
      '{"payer":"0x1"}',
      encodePurchase(purchase('aa')).replace('"amount":"', '"amount":"-'),
    ])
      expect(() => decodePurchase(bad)).toThrow(expect.objectContaining({ code: 'MALFORMED' }));
  });

  for (const [name, open] of [
    ['file', () => fileChannelStore(tmp())],
    ['memory', () => memoryChannelStore()],
  ] as const)
    it(`${name} store: save, load, list, forget (twice is fine)`, async () => {
      const { purchases } = open();
      expect(await purchases!.listPurchases()).toEqual([]);
      expect(await purchases!.loadPurchase(b32('aa'))).toBeUndefined();
      await purchases!.savePurchase(purchase('aa'));
      await purchases!.savePurchase(purchase('bb', 5n));
      expect(await purchases!.loadPurchase(b32('bb'))).toEqual(purchase('bb', 5n));
      expect((await purchases!.listPurchases()).map((p) => p.paymentId).sort()).toEqual([b32('aa'), b32('bb')]);
      await purchases!.forgetPurchase(b32('aa'));
      await purchases!.forgetPurchase(b32('aa'));
      expect(await purchases!.listPurchases()).toEqual([purchase('bb', 5n)]);
    });

  it('the file store keeps one file per purchase in receipts/, read by a new store on the directory; a damaged one is MALFORMED', async () => {
    const dir = tmp();
    await fileChannelStore(dir).purchases!.savePurchase(purchase('aa'));
    expect(readdirSync(join(dir, 'receipts'))).toEqual([`${b32('aa')}.json`]); // no temporary file left
    expect(await fileChannelStore(dir).purchases!.loadPurchase(b32('aa'))).toEqual(purchase('aa'));
    writeFileSync(join(dir, 'receipts', `${b32('aa')}.json`), '{"payer":');
    await expect(fileChannelStore(dir).purchases!.loadPurchase(b32('aa'))).rejects.toMatchObject({ code: 'MALFORMED' });
    await expect(fileChannelStore(dir).purchases!.loadPurchase('0x12' as Bytes32)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });

  it("the file store refuses a purchase file under another payment id (MALFORMED), and drops a dead process's temporary file when it lists", async () => {
    const dir = tmp();
    const { purchases } = fileChannelStore(dir);
    await purchases!.savePurchase(purchase('aa'));
    // a file copied under another id would answer for a payment it is not
    writeFileSync(join(dir, 'receipts', `${b32('cc')}.json`), encodePurchase(purchase('aa')));
    await expect(purchases!.loadPurchase(b32('cc'))).rejects.toMatchObject({ code: 'MALFORMED' });
    await purchases!.forgetPurchase(b32('cc'));
    // a process that died between writing its temporary file and renaming it; and one of this (live) process
    const dead = `${b32('dd')}.json.tmp-${deadPid()}-0`;
    const live = `${b32('ee')}.json.tmp-${process.pid}-99`;
    for (const name of [dead, live]) writeFileSync(join(dir, 'receipts', name), '{');
    expect((await purchases!.listPurchases()).map((p) => p.paymentId)).toEqual([b32('aa')]);
    expect(readdirSync(join(dir, 'receipts')).sort()).toEqual([`${b32('aa')}.json`, live].sort());
  });

  it('a damaged purchase file (torn, or under another id) is moved aside when the store lists, not failing the listing: the others are still listed', async () => {
    const dir = tmp();
    const { purchases } = fileChannelStore(dir);
    await purchases!.savePurchase(purchase('aa'));
    await purchases!.savePurchase(purchase('bb'));
    writeFileSync(join(dir, 'receipts', `${b32('bb')}.json`), '{"payer":');
    writeFileSync(join(dir, 'receipts', `${b32('cc')}.json`), encodePurchase(purchase('aa')));
    expect((await purchases!.listPurchases()).map((p) => p.paymentId)).toEqual([b32('aa')]);
    const names = readdirSync(join(dir, 'receipts')).sort();
    expect(names).toHaveLength(3);
    expect(names[0]).toBe(`${b32('aa')}.json`);
    expect(names[1]).toMatch(new RegExp(`^${b32('bb')}\\.json\\.damaged-\\d+$`));
    expect(names[2]).toMatch(new RegExp(`^${b32('cc')}\\.json\\.damaged-\\d+$`));
    // Kept as they were, for an operator; no longer read.
    expect(readFileSync(join(dir, 'receipts', names[1]!), 'utf8')).toBe('{"payer":');
    expect(await purchases!.loadPurchase(b32('bb'))).toBeUndefined();
    expect((await purchases!.listPurchases()).map((p) => p.paymentId)).toEqual([b32('aa')]);
    expect(readdirSync(join(dir, 'receipts')).sort()).toEqual(names);
  });
});
