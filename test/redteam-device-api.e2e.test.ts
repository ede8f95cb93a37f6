import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes32 } from '@trickle/protocol/random';
import type { Bytes32 } from '@trickle/protocol/types';
import { fileChannelStore } from '@trickle/client/store';
import { worldWithHub, outcomeCode } from './helpers/hub-world.js';
import { waitFor } from './helpers/wait.js';

/**
 * The device API as a firmware author misuses it, against a real hub and chain: every wrong argument is refused at
 * once with a typed error, nothing is signed or stored for it, and the channel goes on paying.
 */
describe('red team: the device API misused', () => {
  const world = worldWithHub();

  const code = outcomeCode;

  it('an escrow id that is not 32 bytes of hex: INVALID_ARGUMENT at once, nothing signed; the payments after it go through', async () => {
    const w = world();
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1n);
    const before = ch.latest;
    const stored = await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId);
    for (const bad of ['0x12', `0x${'zz'.repeat(32)}`, `0x${'ab'.repeat(33)}`, 'hello', 42]) {
      // before the fix: signed and queued, then failing to encode at the send — pending for ever, with every payment
      // after it waiting behind it
      expect(await code(ch.pay(5n, { escrowFor: bad as Bytes32 }))).toBe('INVALID_ARGUMENT');
      expect(ch.pendingPayments).toBe(0);
    }
    expect(ch.latest).toEqual(before);
    expect(await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId)).toEqual(stored);
    const r = await ch.pay(7n);
    expect(r.paidByDevice).toBe(before.state.paidByDevice + 7n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(before.state.paidByDevice + 7n);
    // a well-formed escrow id for no order of the hub's is the hub's to refuse (typed), and the channel goes on
    expect(await code(ch.pay(5n, { escrowFor: randomBytes32() }))).not.toMatch(/^untyped|resolved/);
    expect((await ch.pay(1n)).paidByDevice).toBe(before.state.paidByDevice + 8n);
  });

  it('amounts that are zero, negative, not a bigint or above the balance: typed refusals at once, nothing signed', async () => {
    const w = world();
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000n });
    await ch.pay(1n);
    const before = ch.latest;
    const cases: [unknown, string][] = [
      [0n, 'INVALID_ARGUMENT'],
      [-1n, 'INVALID_ARGUMENT'],
      [1, 'INVALID_ARGUMENT'],
      ['1', 'INVALID_ARGUMENT'],
      [undefined, 'INVALID_ARGUMENT'],
      [1_000n, 'INSUFFICIENT_FUNDS'],
      [2n ** 256n, 'INSUFFICIENT_FUNDS'],
    ];
    for (const [amount, expected] of cases) {
      expect([String(amount), await code(ch.pay(amount as bigint))]).toEqual([String(amount), expected]);
      expect(await code(ch.pay(amount as bigint, { to: w.chain.addresses[4]! }))).toBe(expected);
    }
    expect(ch.pendingPayments).toBe(0);
    expect(ch.latest).toEqual(before);
    expect((await ch.pay(999n)).paidByDevice).toBe(1_000n);
  });

  it('a stream to something that is not an address: INVALID_ARGUMENT when it is created, nothing paid', async () => {
    const w = world();
    const c = await w.client(4);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1n);
    const before = ch.latest;
    for (const to of ['garbage', '0x12', 42, `0x${'zz'.repeat(20)}`]) {
      // before the fix: created, then every tick refused — a stream 'stalled' (waiting for a resume) for ever
      expect(() => ch.stream({ to: to as never, ratePerSecond: 1_000n })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
    }
    expect(ch.pendingPayments).toBe(0);
    expect(ch.latest).toEqual(before);
  });

  it('a payment listener that throws (a firmware bug) does not stall the channel: payments and credits crossing it all complete, its error reaches the process', async () => {
    const w = world();
    // The device runs as its own process, as firmware does, with an uncaughtException handler that logs and goes on
    // (a crash would hide the stall). Before the fix the listener's throw left the channel's event queue mid-step:
    // payments whose acks had arrived meanwhile stayed pending for ever.
    const dir = join(w.dir, 'device-5');
    const opener = await w.client(5);
    const ch = await opener.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    // The device process reads no chain, so it never learns the hub's deposit: a credit is affordable to it only
    // against what the device paid. One unit paid first keeps round 1's credit from racing the round's payments (under
    // load the credit came first and was refused INSUFFICIENT_FUNDS, as it should be).
    await ch.pay(1n);
    await opener.disconnect();
    const code = `
      const { TrickleClient, fileChannelStore } = await import('@trickle/client');
      const { nobleSigner } = await import('@trickle/protocol/signer');
      const { createInterface } = await import('node:readline');
      let errors = 0;
      process.on('uncaughtException', (e) => { errors++; console.log('uncaught', errors, e.message); });
      const client = await TrickleClient.connect({
        url: ${JSON.stringify(w.hub!.url)},
        signer: nobleSigner(${JSON.stringify(w.chain.accounts[5])}),
        store: fileChannelStore(${JSON.stringify(dir)}),
      });
      const ch = client.channels()[0];
      ch.onPayment(() => { throw new Error('display bug'); });
      let credits = 0;
      ch.onPayment(() => { credits++; }); // a listener after the throwing one is still called
      console.log('ready');
      for await (const line of createInterface({ input: process.stdin })) {
        if (line === 'exit') {
          console.log('bye', credits, errors);
          break;
        }
        await Promise.all([...Array.from({ length: 5 }, () => ch.pay(1n)), new Promise((r) => setTimeout(r, Number(line))).then(() => ch.pay(2n))]);
        console.log('paid', ch.latest.state.paidByDevice, ch.latest.state.paidByHub, credits);
      }
      await client.disconnect();
      process.exit(0);
    `;
    const proc = spawn(process.execPath, ['--input-type=module', '-e', code], {
      cwd: new URL('.', import.meta.url),
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines: string[] = [];
    proc.stdout!.on('data', (d) => lines.push(...String(d).split('\n').filter(Boolean)));
    const exited = new Promise((r) => proc.once('exit', r));
    try {
      await waitFor(() => lines.includes('ready'), 30_000);
      const paid = () => lines.filter((l) => l.startsWith('paid'));
      for (let round = 1; round <= 20; round++) {
        proc.stdin!.write(`${round % 5}\n`);
        await w.hub!.credit(ch.channelId, 1n);
        // every payment of the round resolves (the stall left some pending for ever)
        await waitFor(() => paid().length === round, 20_000);
      }
      proc.stdin!.write('exit\n');
      await exited;
      const hub = w.hub!.channels.get(ch.channelId)!.latest.state;
      expect(hub.paidByDevice).toBe(1n + 20n * 7n);
      expect(hub.paidByHub).toBe(20n);
      // every credit reported to the listener after the throwing one; each throw reached the process
      expect(lines.find((l) => l.startsWith('bye'))).toBe('bye 20 20');
      expect(lines.filter((l) => l.startsWith('uncaught')).every((l) => l.endsWith('display bug'))).toBe(true);
    } finally {
      proc.kill('SIGKILL');
    }
  });

  it('after disconnect() nothing keeps node alive: with a stream running, a lock pending, a routed payment pending, or after a failed connect', async () => {
    const w = world();
    const dir = join(w.dir, 'device-6');
    const opener = await w.client(6);
    const ch = await opener.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    await opener.disconnect();
    for (const mode of ['plain', 'stream', 'lock', 'routed', 'no-hub']) {
      // The child ends by itself once its event loop is empty; a handle left behind keeps it alive until the bound,
      // which exits 3 naming what is left.
      const code = `
        const { TrickleClient, fileChannelStore } = await import('@trickle/client');
        const { nobleSigner } = await import('@trickle/protocol/signer');
        const mode = ${JSON.stringify(mode)};
        try {
          const client = await TrickleClient.connect({
            url: mode === 'no-hub' ? 'ws://127.0.0.1:1' : ${JSON.stringify(w.hub!.url)},
            signer: nobleSigner(${JSON.stringify(w.chain.accounts[6])}),
            store: fileChannelStore(${JSON.stringify(dir)}),
            connectTimeoutMs: 2000,
          });
          const ch = client.channels()[0];
          await ch.pay(1n);
          if (mode === 'stream') ch.stream({ to: ${JSON.stringify(w.chain.addresses[7])}, ratePerSecond: 1000n });
          if (mode === 'lock') await ch.pay(1n, { lock: { hash: '0x' + '11'.repeat(32), expiresIn: 600 } }).locked;
          if (mode === 'routed') ch.pay(1n, { to: ${JSON.stringify(w.chain.addresses[8])} }).catch((e) => console.log('routed', e.code));
          await client.disconnect();
          console.log('disconnected');
        } catch (e) {
          console.log('failed', e.code);
        }
        setTimeout(() => {
          console.log('alive', process._getActiveHandles().map((h) => h.constructor.name).join(','));
          process.exit(3);
        }, 10_000).unref();
      `;
      const proc = spawn(process.execPath, ['--input-type=module', '-e', code], {
        cwd: new URL('.', import.meta.url),
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      proc.stdout!.on('data', (d) => (out += String(d)));
      const rc = await new Promise((r) => proc.once('exit', r));
      expect([mode, rc, out.includes('alive')]).toEqual([mode, 0, false]);
      expect(out).toContain(mode === 'no-hub' ? 'failed DISCONNECTED' : 'disconnected');
    }
  }, 120_000);
});
