import { randomBytes } from 'node:crypto';
import { Wallet, getAddress, toQuantity } from 'ethers';
import { afterEach, beforeAll, afterAll, describe, expect, it, vi } from 'vitest';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { isTrickleError, type TrickleError } from '@trickle/protocol/errors';
import type { Bytes32 } from '@trickle/protocol/types';
import type { Adjudicator } from './adjudicator.js';
import { deployAdjudicator } from './deploy.js';
import type { SentCopy, StuckCopy, StuckCopyStore } from './types.js';

// Replace-by-fee on the real dev chain: automine off and the next block's base fee raised above a send's maxFeePerGas
// make it stick in the mempool, as a fee spike does on a live chain; blocks are then mined one by one.
let chain: LocalChain;
let adj: Adjudicator;
beforeAll(async () => {
  chain = await startLocalChain({ accounts: 9 });
  adj = await deployAdjudicator(chain.wallet(0));
});
afterEach(() => chain.provider.send('evm_setAutomine', [true]));
afterAll(() => chain.close());

const rpc = (method: string, params: unknown[] = []) => chain.provider.send(method, params);
const preimage = (): Bytes32 => `0x${randomBytes(32).toString('hex')}` as Bytes32;
/** Waits (by polling, no time bound asserted) until `f` holds. */
async function until(f: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await f())) await new Promise((r) => setTimeout(r, 10));
}
/** Starts a send whose first copy is stuck: the next block's base fee is `times` its maxFeePerGas. */
async function stuck<T>(send: (onSend: (c: SentCopy) => void) => Promise<T>, times = 4n) {
  await rpc('evm_setAutomine', [false]);
  const copies: SentCopy[] = [];
  // Settled into its value or its error at once, so an early rejection is the test's to read, never unhandled.
  const result = send((c) => copies.push(c)).then(
    (value) => ({ value, error: undefined }),
    (error: unknown) => ({ value: undefined, error }),
  );
  await until(() => copies.length === 1);
  await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(copies[0]!.maxFeePerGas * times)]);
  await rpc('evm_mine');
  expect(await chain.provider.getTransactionReceipt(copies[0]!.hash)).toBeNull();
  return { copies, result };
}

/** A send (re-priced every 2 blocks, capped) that sticks, is re-sent once at its cap and gives up there. */
async function givenUpAtCap(send: (onSend: (c: SentCopy) => void) => Promise<unknown>) {
  const { copies, result } = await stuck(send);
  await rpc('evm_mine');
  await until(() => copies.length === 2);
  await rpc('evm_mine');
  await rpc('evm_mine');
  return { copies, gaveUp: (await result).error };
}
/** A stuck-copy store in memory standing for the caller's durable one: `disk` outlives the sender objects. */
function memoryStore() {
  const disk = new Map<string, readonly StuckCopy[]>();
  const saves: (readonly StuckCopy[])[] = [];
  const store: StuckCopyStore = {
    load: async (account) => disk.get(account) ?? [],
    save: async (account, copies) => {
      saves.push(copies);
      disk.set(account, copies);
    },
  };
  return { disk, saves, store };
}

describe('replace-by-fee', () => {
  it('a stuck reveal lands through a replacement with higher fees, the same nonce, and only one copy mined', async () => {
    const sender = adj.connect(chain.wallet(1));
    const from = chain.addresses[1]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const { copies, result } = await stuck((onSend) =>
      sender.reveal(preimage(), { replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 5, onSend } }),
    );
    await rpc('evm_mine'); // second block without it: the bound of 2 blocks is reached
    await until(() => copies.length === 2);
    await rpc('evm_mine');
    const { value: r, error } = await result;
    expect(error).toBeUndefined();
    if (!r) throw new Error('unreachable');
    const [first, second] = copies as [SentCopy, SentCopy];
    expect(r.hash).toBe(second.hash);
    expect(first.hash).not.toBe(second.hash);
    expect([first.nonce, second.nonce]).toEqual([nonce, nonce]);
    expect(second.maxFeePerGas * 100n).toBeGreaterThanOrEqual(first.maxFeePerGas * 120n);
    expect(second.maxPriorityFeePerGas * 100n).toBeGreaterThanOrEqual(first.maxPriorityFeePerGas * 120n);
    const mined = await chain.provider.getTransaction(r.hash);
    expect(mined?.maxFeePerGas).toBe(second.maxFeePerGas);
    expect(r.revealed).toBeDefined();
    // The first copy is never mined: the account's nonce moved by exactly one.
    await rpc('evm_mine');
    await rpc('evm_mine');
    expect(await chain.provider.getTransactionReceipt(first.hash)).toBeNull();
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce + 1);
    const block = await chain.provider.getBlock(r.blockNumber);
    expect(block?.transactions).toEqual([second.hash]);
  });

  it('stops at the fee cap with LIMIT_EXCEEDED after the capped copy had its bound, with no copy mined', async () => {
    const sender = adj.connect(chain.wallet(2));
    const from = chain.addresses[2]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const cap = (fee * 3n) / 2n;
    const { copies, result } = await stuck((onSend) =>
      sender.reveal(preimage(), {
        replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 5, maxFeePerGas: cap, onSend },
      }),
    );
    await rpc('evm_mine');
    await until(() => copies.length === 2);
    expect(copies[1]!.maxFeePerGas).toBe(cap); // the node asks for more; the copy goes at the cap
    await rpc('evm_mine');
    await rpc('evm_mine');
    const err = (await result).error as TrickleError;
    expect(isTrickleError(err, 'LIMIT_EXCEEDED')).toBe(true);
    expect(err.details).toMatchObject({ limit: 'maxFeePerGas', maxFeePerGas: cap, lastFeePerGas: cap, nonce });
    expect((err.details as { hashes: string[] }).hashes).toEqual(copies.map((c) => c.hash));
    expect(copies).toHaveLength(2);
    for (const c of copies) expect(await chain.provider.getTransactionReceipt(c.hash)).toBeNull();
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce);
  });

  it("a send after a give-up at the fee cap takes the stuck copy's nonce: refused while the cap is too low, mined once it is raised", async () => {
    const sender = adj.connect(chain.wallet(4));
    const from = chain.addresses[4]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const cap = (fee * 3n) / 2n;
    const key = preimage();
    const opts = (maxFeePerGas: bigint, onSend: (c: SentCopy) => void) => ({
      replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 5, maxFeePerGas, onSend },
    });
    const { copies, gaveUp } = await givenUpAtCap((onSend) => sender.reveal(key, opts(cap, onSend)));
    expect(isTrickleError(gaveUp, 'LIMIT_EXCEEDED')).toBe(true);
    const capped = copies[1]!;
    expect(capped.maxFeePerGas).toBe(cap);

    // The same cap cannot outbid the copy at the cap: refused at once, nothing sent (no copy queued at nonce + 1).
    const refused: SentCopy[] = [];
    const again = await sender
      .reveal(
        key,
        opts(cap, (c) => refused.push(c)),
      )
      .catch((e: unknown) => e);
    expect(isTrickleError(again, 'LIMIT_EXCEEDED')).toBe(true);
    expect((again as TrickleError).details).toMatchObject({ nonce, lastFeePerGas: cap });
    expect(refused).toEqual([]);

    // A raised cap: the retry replaces the stuck copy (same nonce, fees at least +12.5%) and is mined.
    const retry: SentCopy[] = [];
    const mined = sender
      .reveal(
        key,
        opts(fee * 100n, (c) => retry.push(c)),
      )
      .then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => ({ value: undefined, error }),
      );
    await until(() => retry.length === 1);
    expect(retry[0]!.nonce).toBe(nonce);
    expect(retry[0]!.maxFeePerGas * 8n).toBeGreaterThanOrEqual(cap * 9n);
    expect(retry[0]!.maxPriorityFeePerGas * 8n).toBeGreaterThanOrEqual(capped.maxPriorityFeePerGas * 9n);
    await rpc('evm_mine');
    const { value: r, error } = await mined;
    expect(error).toBeUndefined();
    expect(r?.hash).toBe(retry[0]!.hash);
    expect(r?.revealed).toBeDefined();
    for (const c of copies) expect(await chain.provider.getTransactionReceipt(c.hash)).toBeNull();
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce + 1);

    // Once mined, nothing is remembered: the next send takes the next nonce.
    await rpc('evm_setAutomine', [true]);
    const next: SentCopy[] = [];
    await sender.reveal(
      preimage(),
      opts(fee * 100n, (c) => next.push(c)),
    );
    expect(next.map((c) => c.nonce)).toEqual([nonce + 1]);
  });

  it('a process restarted after a give-up replaces the stuck copy it finds in its stuck-copy store instead of colliding with it', async () => {
    const from = chain.addresses[5]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const cap = (fee * 3n) / 2n;
    // The caller's durable store (a file, a database): what it holds outlives the process.
    const { saves, store: stuckCopies } = memoryStore();
    const opts = (maxFeePerGas: bigint, onSend: (c: SentCopy) => void) => ({
      replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 5, maxFeePerGas, onSend, stuckCopies },
    });
    const first = adj.connect(new Wallet(chain.accounts[5]!, chain.provider));
    const { copies, gaveUp } = await givenUpAtCap((onSend) => first.reveal(preimage(), opts(cap, onSend)));
    expect(isTrickleError(gaveUp, 'LIMIT_EXCEEDED')).toBe(true);
    const capped = copies[1]!;
    // Each copy was saved as it went out (a process dying mid-send leaves it known), then the give-up.
    const saved = (c: SentCopy) => [
      { nonce, maxFeePerGas: c.maxFeePerGas, maxPriorityFeePerGas: c.maxPriorityFeePerGas },
    ];
    expect(saves).toEqual([saved(copies[0]!), saved(capped), saved(capped)]);
    expect(capped.maxFeePerGas).toBe(cap);

    // A new process: fresh modules (nothing remembered in memory), a new wallet and adjudicator on the same chain.
    vi.resetModules();
    const { Adjudicator: Restarted } = await import('./adjudicator.js');
    const second = new Restarted(adj.address, new Wallet(chain.accounts[5]!, chain.provider));
    const retry: SentCopy[] = [];
    const mined = second
      .reveal(
        preimage(),
        opts(fee * 100n, (c) => retry.push(c)),
      )
      .then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => ({ value: undefined, error }),
      );
    let refused = false; // (before the store: EDR refused the retry at once, replacement underpriced)
    void mined.then(({ error }) => (refused = error !== undefined));
    await until(() => retry.length === 1 || refused);
    if (!refused) await rpc('evm_mine');
    const { value: r, error } = await mined;
    expect(error).toBeUndefined();
    // It replaced the stuck copy: its nonce, both fees at least 12.5% above, mined; no stuck copy ever mined.
    expect(retry[0]!.nonce).toBe(nonce);
    expect(retry[0]!.maxFeePerGas * 8n).toBeGreaterThanOrEqual(cap * 9n);
    expect(retry[0]!.maxPriorityFeePerGas * 8n).toBeGreaterThanOrEqual(capped.maxPriorityFeePerGas * 9n);
    expect(r?.hash).toBe(retry[0]!.hash);
    for (const c of copies) expect(await chain.provider.getTransactionReceipt(c.hash)).toBeNull();
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce + 1);
    // A landed send saved only its copy as it went out: the entry of a nonce now mined is skipped by the next read.
    expect(saves).toHaveLength(4);
    expect(saves[3]).toEqual([
      { nonce, maxFeePerGas: retry[0]!.maxFeePerGas, maxPriorityFeePerGas: retry[0]!.maxPriorityFeePerGas },
    ]);
    vi.resetModules();
    const { Adjudicator: Third } = await import('./adjudicator.js');
    await rpc('evm_setAutomine', [true]);
    const next: SentCopy[] = [];
    await new Third(adj.address, new Wallet(chain.accounts[5]!, chain.provider)).reveal(
      preimage(),
      opts(fee * 100n, (c) => next.push(c)),
    );
    expect(next.map((c) => c.nonce)).toEqual([nonce + 1]);
  });

  it('a copy is durable as soon as it is out: a process that dies mid-send (before any give-up) is replaced by its restart', async () => {
    const from = chain.addresses[7]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const { disk, store: stuckCopies } = memoryStore();
    const opts = (onSend: (c: SentCopy) => void) => ({
      replace: { everyBlocks: 1_000, everyMs: 3_600_000, pollMs: 5, onSend, stuckCopies },
    });
    // The first process sends and waits; it never re-prices or gives up (it is about to die).
    const first = adj.connect(new Wallet(chain.accounts[7]!, chain.provider));
    const { copies, result } = await stuck((onSend) => first.reveal(preimage(), opts(onSend)));
    expect(disk.get(getAddress(from))).toEqual([
      { nonce, maxFeePerGas: copies[0]!.maxFeePerGas, maxPriorityFeePerGas: copies[0]!.maxPriorityFeePerGas },
    ]);

    // Its restart (fresh modules: nothing in memory) replaces the copy: same nonce, both fees at least 12.5% above.
    vi.resetModules();
    const { Adjudicator: Restarted } = await import('./adjudicator.js');
    const retry: SentCopy[] = [];
    const second = new Restarted(adj.address, new Wallet(chain.accounts[7]!, chain.provider))
      .reveal(
        preimage(),
        opts((c) => retry.push(c)),
      )
      .then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => ({ value: undefined, error }),
      );
    await until(() => retry.length === 1);
    expect(retry[0]!.nonce).toBe(nonce);
    expect(retry[0]!.maxFeePerGas * 8n).toBeGreaterThanOrEqual(copies[0]!.maxFeePerGas * 9n);
    expect(retry[0]!.maxPriorityFeePerGas * 8n).toBeGreaterThanOrEqual(copies[0]!.maxPriorityFeePerGas * 9n);
    await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(1n)]);
    await rpc('evm_mine');
    const { value: r, error } = await second;
    expect(error).toBeUndefined();
    expect(r?.hash).toBe(retry[0]!.hash);
    expect(await chain.provider.getTransactionReceipt(copies[0]!.hash)).toBeNull();
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce + 1);
    await result; // the dead process's send ends: its nonce was taken
  });

  it("a stored copy above the account's pending count (one of another chain with the same id) is not taken: no nonce gap", async () => {
    const from = chain.addresses[8]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const { disk, store: stuckCopies } = memoryStore();
    disk.set(getAddress(from), [{ nonce: nonce + 5, maxFeePerGas: 1n, maxPriorityFeePerGas: 1n }]);
    const sent: SentCopy[] = [];
    const send = adj
      .connect(new Wallet(chain.accounts[8]!, chain.provider))
      .reveal(preimage(), { replace: { pollMs: 5, stuckCopies, onSend: (c) => sent.push(c) } });
    // Sent at the stored nonce, the copy would wait behind a gap for good: bounded here so that the test fails instead.
    const r = await Promise.race([
      send,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 10_000)),
    ]);
    expect(sent.map((c) => c.nonce)).toEqual([nonce]);
    expect(r?.hash).toBe(sent[0]!.hash);
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce + 1);
  });
  it('a stored copy priced below the one in the mempool (its process stopped before saving it): each retry goes above the fees the node refused until one replaces it', async () => {
    const from = chain.addresses[6]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const { disk, store: stuckCopies } = memoryStore();
    const opts = (maxFeePerGas: bigint, onSend: (c: SentCopy) => void) => ({
      replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 5, maxFeePerGas, onSend, stuckCopies },
    });
    const sender = adj.connect(new Wallet(chain.accounts[6]!, chain.provider));
    const { copies, gaveUp } = await givenUpAtCap((onSend) => sender.reveal(preimage(), opts((fee * 3n) / 2n, onSend)));
    expect(isTrickleError(gaveUp, 'LIMIT_EXCEEDED')).toBe(true);
    // What a process that stopped between sending the second copy and saving it left: the first copy's fees.
    const [older, newer] = copies as [SentCopy, SentCopy];
    disk.set(getAddress(from), [
      { nonce, maxFeePerGas: older.maxFeePerGas, maxPriorityFeePerGas: older.maxPriorityFeePerGas },
    ]);

    vi.resetModules();
    const { Adjudicator: Restarted } = await import('./adjudicator.js');
    const again = new Restarted(adj.address, new Wallet(chain.accounts[6]!, chain.provider));
    const tried: bigint[] = [];
    let sent: SentCopy | undefined;
    let landed: Promise<unknown> | undefined;
    for (let k = 0; k < 6 && sent === undefined; k++) {
      const done = again
        .reveal(
          preimage(),
          opts(fee * 100n, (c) => (sent = c)),
        )
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      await until(
        async () => sent !== undefined || (await Promise.race([done, Promise.resolve('running')])) !== 'running',
      );
      if (sent !== undefined) landed = done;
      else {
        const e = await done;
        // Replacement underpriced, nothing sent (a TrickleError of the fresh modules: its class is theirs).
        expect(e).toMatchObject({ name: 'TrickleError', code: 'INTERNAL' });
        tried.push(disk.get(getAddress(from))![0]!.maxPriorityFeePerGas);
      }
    }
    // Refused while its tip was below the newer copy's by the node's rule, each refusal raising the stored fees.
    expect(tried.length).toBeGreaterThan(0);
    for (let k = 1; k < tried.length; k++) expect(tried[k]! * 8n).toBeGreaterThanOrEqual(tried[k - 1]! * 9n);
    expect(sent?.nonce).toBe(nonce);
    expect(sent!.maxPriorityFeePerGas * 8n).toBeGreaterThanOrEqual(newer.maxPriorityFeePerGas * 9n);
    await rpc('evm_mine');
    expect(await landed).toBeUndefined();
    expect(await chain.provider.getTransactionCount(from, 'latest')).toBe(nonce + 1);
    for (const c of copies) expect(await chain.provider.getTransactionReceipt(c.hash)).toBeNull();
  });

  it('a stuck-copy store that cannot be read fails the send with nothing sent; one that cannot save is named in the give-up', async () => {
    const from = chain.addresses[7]!;
    const nonce = await chain.provider.getTransactionCount(from, 'latest');
    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const sender = adj.connect(new Wallet(chain.accounts[7]!, chain.provider));
    const unreadable: StuckCopyStore = {
      load: () => Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })),
      save: () => Promise.resolve(),
    };
    const none: SentCopy[] = [];
    const refused = await sender
      .reveal(preimage(), { replace: { pollMs: 5, stuckCopies: unreadable, onSend: (c) => none.push(c) } })
      .catch((e: unknown) => e);
    expect(isTrickleError(refused, 'STORE_FAILURE')).toBe(true);
    expect(none).toEqual([]);
    expect(await chain.provider.getTransactionCount(from, 'pending')).toBe(nonce);

    const full: StuckCopyStore = {
      load: async () => [],
      save: () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })),
    };
    const { copies, gaveUp } = await givenUpAtCap((onSend) =>
      sender.reveal(preimage(), {
        replace: {
          everyBlocks: 2,
          everyMs: 3_600_000,
          pollMs: 5,
          maxFeePerGas: (fee * 3n) / 2n,
          onSend,
          stuckCopies: full,
        },
      }),
    );
    const err = gaveUp as TrickleError;
    expect(isTrickleError(err, 'LIMIT_EXCEEDED')).toBe(true);
    expect(err.details).toMatchObject({ nonce, stuckCopyUnsaved: true });
    expect((err.cause as { code?: string }).code).toBe('ENOSPC');
  });

  it('stops with TIMEOUT once the chain passes the deadline', async () => {
    const sender = adj.connect(chain.wallet(3));
    const head = await chain.provider.getBlock('latest');
    const deadline = BigInt(head!.timestamp) + 3n;
    const { copies, result } = await stuck((onSend) =>
      sender.reveal(preimage(), { replace: { everyBlocks: 1_000, everyMs: 3_600_000, pollMs: 5, deadline, onSend } }),
    );
    await rpc('evm_setNextBlockTimestamp', [Number(deadline)]);
    await rpc('evm_mine');
    const err = (await result).error as TrickleError;
    expect(isTrickleError(err, 'TIMEOUT')).toBe(true);
    expect(err.details).toMatchObject({ method: 'reveal', deadline });
    expect(copies).toHaveLength(1);
    // The copy left behind holds its nonce: the account's next send (another call) replaces it instead of queuing.
    const next: SentCopy[] = [];
    const again = sender
      .reveal(preimage(), { replace: { everyMs: 3_600_000, pollMs: 5, onSend: (c) => next.push(c) } })
      .then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => ({ value: undefined, error }),
      );
    await until(() => next.length === 1);
    expect(next[0]!.nonce).toBe(copies[0]!.nonce);
    await rpc('evm_mine');
    expect((await again).value?.hash).toBe(next[0]!.hash);
    expect(await chain.provider.getTransactionReceipt(copies[0]!.hash)).toBeNull();
  });

  it('refuses a raise below what nodes accept', async () => {
    const err = await adj
      .connect(chain.wallet(3))
      .reveal(preimage(), { replace: { bumpPercent: 10 } })
      .catch((e: unknown) => e);
    expect(isTrickleError(err, 'INVALID_ARGUMENT')).toBe(true);
  });
});
