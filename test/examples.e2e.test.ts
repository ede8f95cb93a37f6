import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

const run = promisify(execFile);
const example = async (name: string) => {
  const file = fileURLToPath(new URL(`../examples/${name}.mjs`, import.meta.url));
  const { stdout } = await run(process.execPath, [file, '--json'], { timeout: 90_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
};

/** The README's examples run as a user would run them, and do what they say. */
describe('examples', () => {
  it('ev-charging: a payment stream whose rate follows the market clearing price, paid and seen to the base unit', async () => {
    const r = await example('ev-charging');
    expect(r.tariffs).toHaveLength(4); // posted, then three clearings
    expect(r.rates).toEqual(r.tariffs.map((t: string) => ((BigInt(t) * 11n) / 3600n).toString()));
    expect(BigInt(r.paid)).toBeGreaterThan(0n);
    expect(r.received).toBe(r.paid);
    expect(r.carPaid).toBe(r.paid);
    expect([r.carClose, r.chargerClose]).toEqual(['cooperative', 'cooperative']);
  });
  it('paid-api: a stock x402 fetch client buys 20 readings from a stock x402 express API through its channel', async () => {
    const r = await example('paid-api');
    expect(r.served).toBe(20);
    expect(r.unpaidStatus).toBe(402);
    expect(r.paid).toBe('20000');
    expect(r.earned).toBe('20000');
    expect(r.lastTransaction).toMatch(/^0x[0-9a-f]{64}$/);
  });
  it('sensor-readings: one reading per payment', async () => {
    const r = await example('sensor-readings');
    expect(r.readings).toBe(40);
    expect(r.paid).toBe('20000');
    expect(r.received).toBe('20000');
  });
  it('data-market: a signed reading is decrypted with the key the sensor revealed to claim its conditional payment', async () => {
    // The README's two blocks are the example's code, word for word.
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const source = readFileSync(new URL('../examples/data-market.mjs', import.meta.url), 'utf8');
    const section = readme.slice(
      readme.indexOf('## Conditional payments and data for payment'),
      readme.indexOf('## Layout'),
    );
    const blocks = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks).toHaveLength(2);
    for (const b of blocks) for (const line of b.trim().split('\n')) expect(source).toContain(line.trim());
    const r = await example('data-market');
    expect(r).toEqual({ celsius: 21.4, signedBySensor: true, paid: '250000', received: '250000', keyRevealed: true });
  });
  it('household-market: rounds clear at one price and the nets sum to zero', async () => {
    const r = await example('household-market');
    expect(r.rounds).toBe(3);
    expect(r.nets.map(BigInt).reduce((a: bigint, b: bigint) => a + b, 0n)).toBe(0n);
    for (const p of r.prices) expect(BigInt(p.volume)).toBeGreaterThan(0n);
  });
  it('demo --json reconciles 50 channels', async () => {
    const file = fileURLToPath(new URL('../examples/demo.mjs', import.meta.url));
    const { stdout } = await run(process.execPath, [file, '--json', '--seconds', '3'], { timeout: 120_000 });
    const r = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(r.reconciled).toBe(true);
    expect(r.channels).toBe(50);
    expect(r.payoutsTotal).toBe(r.depositsTotal);
    expect(r.rounds).toBeGreaterThan(0);
    expect(r.staleForceClose.challengedByWatchtower).toBe(true);
  }, 120_000);
});
