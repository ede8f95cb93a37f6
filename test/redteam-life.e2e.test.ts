import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { balanceOf } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { fileChannelStore, type ChannelStore } from '@trickle/client/store';
import type { TrickleClient } from '@trickle/client/client';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { randomBytes32 } from '@trickle/protocol/random';
import { createWorld, type World } from './helpers/harness.js';
import { freePort } from './helpers/hub-process.js';
import { waitFor } from './helpers/wait.js';

const DEVICE = fileURLToPath(new URL('./helpers/device-child.mjs', import.meta.url));

/** A device process (test/helpers/device-child.mjs): its stdout lines as they come, stdin for commands. */
interface Device {
  proc: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
  send(cmd: string): void;
  count(prefix: string): number;
}

function device(url: string, key: string, dir: string, skewMs = 0): Device {
  const proc = spawn(process.execPath, [DEVICE, url, key, dir], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, DEVICE_CLOCK_SKEW_MS: String(skewMs) },
  });
  const lines: string[] = [];
  let buf = '';
  proc.stdout!.on('data', (d) => {
    buf += String(d);
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts.filter(Boolean));
  });
  proc.stderr!.on('data', (d) => process.stderr.write(d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return {
    proc,
    lines,
    exited,
    send: (cmd) => proc.stdin!.write(`${cmd}\n`),
    count: (prefix) => lines.filter((l) => l.startsWith(prefix)).length,
  };
}

/**
 * The device's lifecycle attacked with real parts (an EDR chain, a hub with its LMDB store, device file stores):
 * a hub that lost its disk, a device restored from an older backup, two clients on one key and store, open twice,
 * close twice, close racing pay() and a credit, pay after close, reconnect storms. Every refusal is typed and leaves
 * the device's state (memory and store) unchanged; no payment is lost or paid twice; the hub never sees the device
 * sign two different states at one version.
 */
describe('red team: the device lifecycle', () => {
  let w: World;
  let port: number;
  const hubStore = () => join(w.dir, 'hub-store');
  const startHub = () => w.startHub({ storePath: hubStore(), more: { port } });
  const equivocations = async () =>
    Number(
      (await w.hub!.metrics.registry.getSingleMetricAsString('trickle_updates_total')).match(
        /outcome="EQUIVOCATION"} (\d+)/,
      )?.[1] ?? 0,
    );
  const fast = { reconnect: { initialDelayMs: 20, maxDelayMs: 100 } };

  beforeAll(async () => {
    w = await createWorld();
    port = await freePort();
    await startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  it('a hub restarted from a store older than what it acked (a lost disk) takes the device’s newer state from its sync; the device keeps it and goes on', async () => {
    const c = await w.client(2, fast);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 100_000n);
    for (let k = 0; k < 5; k++) await ch.pay(10n);
    await w.hub!.credit(ch.channelId, 7n);
    await w.hub!.close();
    const backup = join(w.dir, 'hub-store-backup');
    cpSync(hubStore(), backup, { recursive: true });
    await startHub();
    await waitFor(() => c.connected && ch.latest.state.version > 0n);
    for (let k = 0; k < 5; k++) await ch.pay(100n);
    await w.hub!.credit(ch.channelId, 1_000n);
    const better = ch.latest;
    expect(better.state.paidByDevice).toBe(550n);
    expect(better.state.paidByHub).toBe(1_007n);
    // the disk is lost: the hub comes back from the older copy
    await w.hub!.close();
    rmSync(hubStore(), { recursive: true, force: true });
    cpSync(backup, hubStore(), { recursive: true });
    await startHub();
    const restored = w.hub!.channels.get(ch.channelId)!.latest.state;
    expect(restored.version).toBeLessThan(better.state.version);
    // the device resyncs: it keeps its better state, and the hub adopts it (both signed it)
    await waitFor(() => w.hub!.channels.get(ch.channelId)!.latest.state.version === better.state.version);
    expect(ch.latest).toEqual(better);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state).toEqual(better.state);
    await ch.pay(1n);
    await w.hub!.credit(ch.channelId, 2n);
    expect(ch.latest.state.paidByDevice).toBe(551n);
    expect(ch.latest.state.paidByHub).toBe(1_009n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state).toEqual(ch.latest.state);
    expect(await equivocations()).toBe(0);
    await c.disconnect();
  });

  it('a device restored from an older backup of its store resyncs before it signs: no version signed twice, nothing lost', async () => {
    const dir = join(w.dir, 'device-3-backup-test');
    const c1 = await w.client(3, { ...fast, store: fileChannelStore(dir) });
    const ch1 = await c1.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch1.channelId, 100_000n);
    for (let k = 0; k < 3; k++) await ch1.pay(10n);
    await c1.disconnect();
    const file = join(dir, `${ch1.channelId}.channel`);
    const old = readFileSync(file);
    const c2 = await w.client(3, { ...fast, store: fileChannelStore(dir) });
    const ch2 = c2.channel(ch1.channelId)!;
    for (let k = 0; k < 7; k++) await ch2.pay(10n);
    await w.hub!.credit(ch1.channelId, 500n);
    const newest = ch2.latest;
    await c2.disconnect();
    // the backup is older than what the device signed since
    writeFileSync(file, old);
    expect((await fileChannelStore(dir).load(ch1.channelId))!.latest.state.version).toBeLessThan(newest.state.version);
    const c3 = await w.client(3, { ...fast, store: fileChannelStore(dir) });
    const ch3 = c3.channel(ch1.channelId)!;
    await ch3.pay(1n);
    expect(ch3.latest.state.version).toBeGreaterThan(newest.state.version);
    expect(ch3.latest.state.paidByDevice).toBe(101n);
    expect(ch3.latest.state.paidByHub).toBe(500n); // the credit is not lost
    expect(w.hub!.channels.get(ch1.channelId)!.latest.state).toEqual(ch3.latest.state);
    expect(await equivocations()).toBe(0);
    await c3.disconnect();
  });

  it('open twice with the same salt: refused with a typed error, the channel’s record untouched', async () => {
    const dir = join(w.dir, 'device-4-open-twice');
    const c = await w.client(4, { ...fast, store: fileChannelStore(dir) });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(123n);
    await ch.flushWrites();
    const store = fileChannelStore(dir);
    const before = (await store.load(ch.channelId))!;
    expect(before.latest.state.paidByDevice).toBe(123n);
    const err = await c.openChannel({ token: w.token, deposit: 5n, salt: ch.record.params.salt }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: expect.any(String) });
    expect((err as { code: string }).code).not.toBe('INTERNAL');
    // neither the store nor the live channel went back to the zero state
    expect((await fileChannelStore(dir).load(ch.channelId))!).toEqual(before);
    expect(c.channel(ch.channelId)).toBe(ch);
    await ch.pay(1n);
    expect(ch.latest.state.paidByDevice).toBe(124n);
    await c.disconnect();
    expect((await fileChannelStore(dir).load(ch.channelId))!.latest.state.paidByDevice).toBe(124n);
  });

  it('two opens with one salt at the same instant: one channel, one deposit, the other refused with INVALID_ARGUMENT', async () => {
    const dir = join(w.dir, 'device-4-open-race');
    const c = await w.client(4, { ...fast, store: fileChannelStore(dir) });
    const salt = randomBytes32();
    const before = await balanceOf(w.chain.provider, w.token, c.address);
    const outcomes = await Promise.allSettled([
      c.openChannel({ token: w.token, deposit: 1_000n, salt }),
      c.openChannel({ token: w.token, deposit: 2_000n, salt }),
    ]);
    const opened = outcomes.filter((o) => o.status === 'fulfilled');
    const refused = outcomes.filter((o) => o.status === 'rejected');
    expect(opened).toHaveLength(1);
    expect(refused.map((o) => (o.reason as { code?: string }).code)).toEqual(['INVALID_ARGUMENT']);
    const ch = opened[0]!.value;
    // One deposit left the device, and the record holds it (never written back to the zero state by the other call).
    expect(before - (await balanceOf(w.chain.provider, w.token, c.address))).toBe(1_000n);
    expect((await fileChannelStore(dir).load(ch.channelId))!.funding.device).toBe(1_000n);
    await ch.pay(7n);
    expect(ch.latest.state.paidByDevice).toBe(7n);
    await c.disconnect();
  });

  it('close() twice, close() racing pay(), pay after close: one close, every resolved payment in the final state, typed refusals after', async () => {
    const c = await w.client(5, fast);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1_000n);
    let resolved = 1_000n;
    const outcomes: Promise<void>[] = [];
    for (let k = 0; k < 30; k++)
      outcomes.push(
        ch.pay(3n).then(
          () => void (resolved += 3n),
          (e: { code?: string }) => expect(e.code).toBe('CHANNEL_FINAL'),
        ),
      );
    const before = await balanceOf(w.chain.provider, w.token, c.address);
    const [a, b] = await Promise.all([c.close(ch.channelId), c.close(ch.channelId)]);
    await Promise.all(outcomes);
    expect(a).toBe(b);
    expect(a.mode).toBe('cooperative');
    expect(a.state.state.isFinal).toBe(true);
    expect(a.state.state.paidByDevice).toBe(resolved);
    expect((await balanceOf(w.chain.provider, w.token, c.address)) - before).toBe(1_000_000n - resolved);
    const third = await c.close(ch.channelId);
    expect(third.state).toEqual(a.state);
    const latest = ch.latest;
    await expect(ch.pay(1n)).rejects.toMatchObject({ code: 'CHANNEL_FINAL' });
    expect(ch.latest).toEqual(latest);
    const onChain = await new Adjudicator(w.adjudicator, w.chain.wallet(9)).getChannel(ch.channelId);
    expect(onChain.status).toBe('closed');
    await c.disconnect();
  });

  it('close() during a hub credit: the credit is in the final state or refused, never half-counted', async () => {
    const c = await w.client(6, fast);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 100_000n);
    await ch.pay(10n);
    const credit = w.hub!.credit(ch.channelId, 4_000n).then(
      () => 4_000n,
      () => 0n,
    );
    const closing = c.close(ch.channelId);
    const [credited, result] = await Promise.all([credit, closing]);
    expect(result.state.state.paidByHub).toBe(credited);
    expect(result.state.state.paidByDevice).toBe(10n);
    expect(w.hub!.channels.get(ch.channelId)?.latest.state.paidByHub ?? credited).toBe(credited);
    await c.disconnect();
  });

  it('a reconnect storm with payments and credits crossing: totals exact on both sides, no equivocation', async () => {
    const c = await w.client(7, fast);
    const ch = await c.openChannel({ token: w.token, deposit: 10_000_000n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    const pays: Promise<unknown>[] = [];
    const credits: Promise<unknown>[] = [];
    for (let k = 0; k < 200; k++) {
      pays.push(ch.pay(2n));
      if (k % 20 === 0) credits.push(w.hub!.credit(ch.channelId, 5n));
      if (k % 10 === 0) {
        c.dropConnectionForTest();
        await new Promise((r) => setImmediate(r));
      }
    }
    await Promise.all(pays);
    await Promise.all(credits);
    await waitFor(() => ch.latest.state.paidByHub === 50n);
    expect(ch.latest.state.paidByDevice).toBe(400n);
    await waitFor(() => w.hub!.channels.get(ch.channelId)!.latest.state.version === ch.latest.state.version);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state).toEqual(ch.latest.state);
    expect(await equivocations()).toBe(0);
    await c.disconnect();
  });

  it('device processes SIGKILLed mid-stream with credits in flight, restarted on their store: no payment lost or paid twice, no credit lost, no equivocation; a second process on the store is refused', async () => {
    const dir = join(w.dir, 'device-10-proc');
    const key = w.chain.accounts[10]!;
    const opener = await w.client(10, { store: fileChannelStore(dir) });
    const ch = await opener.openChannel({ token: w.token, deposit: 100_000_000n });
    await w.hubDeposit(ch.channelId, 10_000_000n);
    // the device learns the hub's deposit from the chain (the device processes below run without one)
    await w.hub!.credit(ch.channelId, 1n);
    expect(ch.record.funding.hub).toBe(10_000_000n);
    await opener.disconnect();
    const hubState = () => w.hub!.channels.get(ch.channelId)!.latest.state;
    let creditedOk = 1n;
    let paidBefore = hubState().paidByDevice;
    let killedBehind = 0;
    const credits: Promise<unknown>[] = [];
    for (const killAfter of [3, 40, 150]) {
      const a = device(w.hub!.url, key, dir);
      await waitFor(() => a.count('ready') === 1, 30_000);
      // (a credit left in flight by the kill may be reported before it: the hub delivers it again at the resync)
      const ready = a.lines.find((l) => l.startsWith('ready'))!.split(' ');
      expect(BigInt(ready[3]!)).toBe(paidBefore + 1n); // the restart lost nothing and paid nothing twice
      await Promise.all(credits); // the credits left in flight by the kill are settled with the new process
      const atStart = hubState();
      expect(atStart.paidByHub).toBe(creditedOk); // every credit the hub saw countersigned is the device's, once

      // a second device process on the same store is refused before it reads or signs anything
      const store = fileChannelStore(dir);
      for (let t = 0; (await store.load(ch.channelId))!.latest.state.version !== atStart.version; t++) {
        if (t > 200) throw new Error('the write behind the ready payment did not land');
        await new Promise((r) => setTimeout(r, 50));
      }
      const record = await store.load(ch.channelId);
      const b = device(w.hub!.url, key, dir);
      expect(await b.exited).toBe(2);
      expect(b.lines).toEqual(['error STORE_FAILURE IN_USE']);
      expect(await store.load(ch.channelId)).toEqual(record);
      const lock = readdirSync(dir)
        .filter((n) => n.startsWith('.lock.'))
        .sort((x, y) => x.length - y.length || (x < y ? -1 : 1))
        .at(-1)!;
      expect(readFileSync(join(dir, lock), 'utf8')).toBe(`${a.proc.pid}\n`); // still the first process's
      expect(hubState()).toEqual(atStart);

      const creditsSeen = a.count('credit');
      a.send('pay 1 100000');
      await waitFor(() => a.count('paid') >= killAfter, 30_000);
      for (let k = 0; k < 5; k++)
        credits.push(
          w.hub!.credit(ch.channelId, 100n).then(
            () => void (creditedOk += 100n),
            (e: { code?: string }) => expect(e.code).toMatch(/^[A-Z_]+$/),
          ),
        );
      await waitFor(() => a.count('credit') > creditsSeen, 30_000);
      // killed mid-stream: a few payments past the credit (whose write brought the store level), so most likely
      // between an ack and the write behind it
      const paidSeen = a.count('paid');
      await waitFor(() => a.count('paid') >= paidSeen + 3, 30_000);
      a.proc.kill('SIGKILL');
      await a.exited;
      const paidLines = a.lines.filter((l) => l.startsWith('paid'));
      const acked = BigInt(paidLines[paidLines.length - 1]!.split(' ')[2]!);
      expect(hubState().paidByDevice).toBeGreaterThanOrEqual(acked); // every acked payment is the hub's
      paidBefore = hubState().paidByDevice;
      const stored = (await fileChannelStore(dir).load(ch.channelId))!.latest.state.paidByDevice;
      if (stored < acked) killedBehind++; // killed between an ack and the write behind it
    }
    // the last restart settles the credits left in flight, then pays on
    const c = device(w.hub!.url, key, dir);
    await waitFor(() => c.count('ready') === 1, 30_000);
    await Promise.all(credits);
    await waitFor(() => hubState().paidByHub === creditedOk);
    const before = hubState();
    c.send('pay 2 5');
    await waitFor(() => c.count('paid') === 5, 30_000);
    c.send('exit');
    expect(await c.exited).toBe(0);
    const after = hubState();
    expect(after.paidByDevice).toBe(before.paidByDevice + 10n);
    expect(after.paidByHub).toBe(creditedOk); // every credit the hub saw countersigned is the device's, once
    const stored = (await fileChannelStore(dir).load(ch.channelId))!;
    expect(stored.latest.state).toEqual(after);
    expect(await equivocations()).toBe(0);
    expect(killedBehind).toBeGreaterThan(0); // the kills did land between acks and their writes
  }, 90_000);

  it('devices whose clocks are hours ahead or behind connect, resync, pay and take credits as usual', async () => {
    for (const [i, skew] of [
      [11, 3 * 3_600_000],
      [9, -3 * 3_600_000],
    ] as const) {
      const dir = join(w.dir, `device-${i}-skew`);
      const opener = await w.client(i, { store: fileChannelStore(dir) });
      const ch = await opener.openChannel({ token: w.token, deposit: 1_000_000n });
      await w.hubDeposit(ch.channelId, 100_000n);
      await w.hub!.credit(ch.channelId, 1n);
      await opener.disconnect();
      const d = device(w.hub!.url, w.chain.accounts[i]!, dir, skew);
      await waitFor(() => d.count('ready') === 1, 30_000);
      d.send('pay 3 4');
      d.send('burst 2 10');
      await waitFor(() => d.count('paid') === 14, 30_000);
      await w.hub!.credit(ch.channelId, 50n);
      await waitFor(() => d.count('credit') === 1, 30_000);
      d.send('exit');
      expect(await d.exited).toBe(0);
      const hub = w.hub!.channels.get(ch.channelId)!.latest.state;
      expect(hub.paidByDevice).toBe(1n + 12n + 20n);
      expect(hub.paidByHub).toBe(51n);
      expect((await fileChannelStore(dir).load(ch.channelId))!.latest.state).toEqual(hub);
    }
  }, 90_000);

  it('the hub stopped and restarted mid-burst (its sockets closed with payments in flight): every payment resolves once, the hub counts each once', async () => {
    const dir = join(w.dir, 'device-2-burst');
    const opener = await w.client(2, { store: fileChannelStore(dir) });
    const ch = await opener.openChannel({ token: w.token, deposit: 100_000_000n });
    await opener.disconnect();
    const d = device(w.hub!.url, w.chain.accounts[2]!, dir);
    await waitFor(() => d.count('ready') === 1, 30_000);
    const start = w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice;
    for (let k = 0; k < 150; k++) d.send('burst 3 20'); // one after the other, 20 pay() calls in one turn each
    await waitFor(() => d.count('paid') >= 200, 30_000);
    await w.hub!.close();
    expect(d.count('paid')).toBeLessThan(3000); // the hub went away mid-burst
    await startHub();
    await waitFor(() => d.count('paid') === 3000, 60_000);
    d.send('exit');
    expect(await d.exited).toBe(0);
    const hub = w.hub!.channels.get(ch.channelId)!.latest.state;
    expect(hub.paidByDevice - start).toBe(9_000n);
    expect((await fileChannelStore(dir).load(ch.channelId))!.latest.state).toEqual(hub);
    expect(await equivocations()).toBe(0);
  }, 120_000);

  it('a restarted client on a channel it closed: close() and pay() are CHANNEL_FINAL, nothing sent, the record unchanged (close() marked it force-closing and sent a forceClose that reverted)', async () => {
    const dir = join(w.dir, 'device-3-closed');
    const c1 = await w.client(3, { store: fileChannelStore(dir) });
    const ch = await c1.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(40n);
    const closed = await c1.close(ch.channelId);
    expect(closed.mode).toBe('cooperative');
    await c1.disconnect();
    const stored = (await fileChannelStore(dir).load(ch.channelId))!;
    const c2 = await w.client(3, { store: fileChannelStore(dir) });
    const ch2 = c2.channel(ch.channelId)!;
    await expect(ch2.pay(1n)).rejects.toMatchObject({ code: 'CHANNEL_FINAL' });
    const nonce = await w.chain.provider.getTransactionCount(c2.address);
    await expect(c2.close(ch.channelId, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: 'CHANNEL_FINAL' });
    expect(await w.chain.provider.getTransactionCount(c2.address)).toBe(nonce); // nothing sent
    expect((await fileChannelStore(dir).load(ch.channelId))!).toEqual(stored);
    const onChain = await new Adjudicator(w.adjudicator, w.chain.wallet(9)).getChannel(ch.channelId);
    expect(onChain.status).toBe('closed');
    await c2.disconnect();
  });

  it('a device that stopped after the final state was signed and before its cooperativeClose was mined: close() after the restart sends it, not a force close', async () => {
    const dir = join(w.dir, 'device-4-unmined');
    const real = adjudicatorClientChain({
      wallet: w.chain.wallet(4),
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
    });
    // the process "dies" at the transaction: it never leaves
    const dying = new Proxy(real, {
      get: (t, k) =>
        k === 'cooperativeClose'
          ? () => Promise.reject(new Error('the device died before its transaction left'))
          : (Reflect.get(t, k) as unknown),
    });
    const c1 = await w.client(4, { store: fileChannelStore(dir), chain: dying });
    const ch = await c1.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(300n);
    await expect(c1.close(ch.channelId)).rejects.toThrow(/died/);
    await c1.disconnect();
    const stored = (await fileChannelStore(dir).load(ch.channelId))!;
    expect(stored.latest.state.isFinal).toBe(true);
    expect(stored.closing).toBe('cooperative');
    const c2 = await w.client(4, { store: fileChannelStore(dir) });
    const before = await balanceOf(w.chain.provider, w.token, c2.address);
    const result = await c2.close(ch.channelId, { timeoutMs: 2_000 });
    expect(result.mode).toBe('cooperative');
    expect(result.state).toEqual(stored.latest);
    expect((await balanceOf(w.chain.provider, w.token, c2.address)) - before).toBe(1_000_000n - 300n);
    expect((await new Adjudicator(w.adjudicator, w.chain.wallet(9)).getChannel(ch.channelId)).status).toBe('closed');
    expect((await fileChannelStore(dir).load(ch.channelId))!.closing).toBe('cooperative');
    await c2.disconnect();
  });

  it('pay() and close() after disconnect(): typed refusals at once, nothing signed, the store unchanged', async () => {
    const dir = join(w.dir, 'device-5-after');
    const c = await w.client(5, { store: fileChannelStore(dir) });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(10n);
    await c.disconnect();
    const stored = (await fileChannelStore(dir).load(ch.channelId))!;
    const hubBefore = w.hub!.channels.get(ch.channelId)!.latest;
    const settle = <T>(p: Promise<T>) =>
      Promise.race([
        p.then(
          () => 'resolved',
          (e: { code?: string }) => e.code ?? String(e),
        ),
        new Promise((r) => setTimeout(() => r('pending'), 5_000)),
      ]);
    const nonce = await w.chain.provider.getTransactionCount(c.address);
    expect(await settle(ch.pay(1n))).toBe('DISCONNECTED'); // it waited forever
    expect(await settle(c.close(ch.channelId, { timeoutMs: 1_000 }))).toBe('DISCONNECTED'); // it force-closed
    expect(await w.chain.provider.getTransactionCount(c.address)).toBe(nonce);
    expect((await fileChannelStore(dir).load(ch.channelId))!).toEqual(stored);
    expect(w.hub!.channels.get(ch.channelId)!.latest).toEqual(hubBefore);
  });

  it('a device that dies before its credit write lands, or after it and before its countersignature leaves: the restarted device has the credit once', async () => {
    for (const [i, when] of [
      [6, 'before the write'],
      [7, 'after the write'],
    ] as const) {
      const dir = join(w.dir, `device-${i}-credit-kill`);
      const inner = fileChannelStore(dir);
      let mode: 'normal' | 'hang' | 'dieAfter' = 'normal';
      const hung: (() => void)[] = [];
      let c1: TrickleClient | undefined;
      const store: ChannelStore = {
        load: (id) => inner.load(id),
        list: () => inner.list(),
        save: async (r) => {
          if (mode === 'hang' && r.latest.state.paidByHub > 1n)
            return new Promise<void>((_, reject) => hung.push(() => reject(new Error('dead'))));
          await inner.save(r);
          if (mode === 'dieAfter' && r.latest.state.paidByHub > 1n) {
            mode = 'normal';
            void c1!.disconnect(); // the socket closes before the countersignature is sent
          }
        },
      };
      c1 = await w.client(i, { store });
      const ch = await c1.openChannel({ token: w.token, deposit: 1_000_000n });
      await w.hubDeposit(ch.channelId, 100_000n);
      await w.hub!.credit(ch.channelId, 1n); // the device learns the hub's deposit
      await ch.pay(5n);
      await ch.flushWrites();
      mode = when === 'before the write' ? 'hang' : 'dieAfter';
      const credit = w.hub!.credit(ch.channelId, 70n).then(
        () => 'credited',
        (e: { code?: string }) => e.code,
      );
      if (when === 'before the write') {
        await waitFor(() => hung.length > 0);
        void c1.disconnect(); // dies: its write never lands
        expect((await inner.load(ch.channelId))!.latest.state.paidByHub).toBe(1n);
      } else {
        await waitFor(() => !c1!.connected);
        expect((await inner.load(ch.channelId))!.latest.state.paidByHub).toBe(71n);
      }
      const c2 = await w.client(i, { store: fileChannelStore(dir) });
      const ch2 = c2.channel(ch.channelId)!;
      // it pays too (the credit below lands either way: see 'a device restarted cleanly takes a hub credit')
      await ch2.pay(1n);
      const outcome = await credit;
      for (const fail of hung.splice(0)) fail();
      expect(outcome, when).toBe('credited');
      const hub = w.hub!.channels.get(ch.channelId)!.latest.state;
      expect(hub.paidByHub).toBe(71n); // once
      expect(hub.paidByDevice).toBe(6n);
      expect(ch2.latest.state).toEqual(hub);
      expect(await equivocations()).toBe(0);
      for (const fail of hung.splice(0)) fail();
      await c2.disconnect();
    }
  });

  // After any restart a device's signing ceiling is the version it reserved ahead on disk (latest + 1024): it must refuse
  // to countersign a hub state at or below it. It passes the ceiling once after its resync with a state that only
  // raises the version, so a payee that never pays still takes credits (before that fix: STALE_VERSION, forever).
  it('a device restarted cleanly takes a hub credit before it pays anything', async () => {
    const dir = join(w.dir, 'device-8-payee');
    const c1 = await w.client(8, { store: fileChannelStore(dir) });
    const ch = await c1.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 100_000n);
    await ch.pay(5n);
    await w.hub!.credit(ch.channelId, 10n); // above what the device paid: the device reads the hub's deposit
    await c1.disconnect();
    const c2 = await w.client(8, { store: fileChannelStore(dir) });
    try {
      await w.hub!.credit(ch.channelId, 70n); // STALE_VERSION: the device already signed this version
      expect(c2.channel(ch.channelId)!.latest.state.paidByHub).toBe(80n);
    } finally {
      await c2.disconnect();
    }
  });
});
