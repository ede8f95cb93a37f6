#!/usr/bin/env node
// Gas used by each adjudicator operation, measured on the real compiled bytecode on an in-process EDR chain.
// Prints a table (or JSON with --json) and writes the same table to contracts/GAS.md; with --check it only compares.
// Run through `npm run gas` (builds first).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { compilerInfo } from '@trickle/chain/generated/artifacts';
import { startLocalChain } from '@trickle/devchain/localChain';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { toHex } from '@trickle/protocol/hex';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { ETH_TOKEN } from '@trickle/protocol/types';
import { hashPreimage, lockCommitment } from '@trickle/protocol/locks';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const json = process.argv.includes('--json');
// --check: compare with contracts/GAS.md instead of writing it (exit 1 when they differ)
const check = process.argv.includes('--check');
const BATCH = 10;
const CHALLENGE = 3600n;
const MAX = (1n << 256n) - 1n;

const chain = await startLocalChain({ accounts: 6 });
// Every block gets a timestamp from this fixed clock (one second per transaction, plus any time travel), so deadlines
// and lock expiries, which travel in calldata, have the same bytes on every run and the table is reproducible.
let clock = 1_900_000_001n;
{
  const send = chain.provider.send.bind(chain.provider);
  const at = (t) => send('evm_setNextBlockTimestamp', [`0x${t.toString(16)}`]);
  chain.provider.send = async (method, params) => {
    if (method === 'eth_sendRawTransaction' || method === 'eth_sendTransaction') await at((clock += 1n));
    if (method === 'evm_increaseTime') return at((clock += BigInt(params[0])));
    return send(method, params);
  };
  await at(clock);
  await send('evm_mine', []);
}
const [deployer, device, hub, relayer] = [0, 1, 2, 3].map((i) => chain.wallet(i));
const [, deviceAddr, hubAddr, , other] = chain.addresses;
const deviceKey = nobleSigner(chain.accounts[1]);
const hubKey = nobleSigner(chain.accounts[2]);

const adjudicator = await deployAdjudicator(deployer);
const usdt = await deployToken(deployer, 'usdt');
const blocking = await deployToken(deployer, 'blocking', { blocked: deviceAddr });
for (const w of [device, hub]) {
  await mintTestToken(deployer, usdt.address, await w.getAddress(), 10n ** 30n);
  await approve(w, usdt.address, adjudicator.address, MAX);
}
await mintTestToken(deployer, blocking.address, hubAddr, 10n ** 30n);
await approve(hub, blocking.address, adjudicator.address, MAX);
const sep = domainSeparator(trickleDomain(chain.chainId, adjudicator.address));

let salt = 0n;
function params(token) {
  salt += 1n;
  return {
    chainId: chain.chainId,
    adjudicator: adjudicator.address,
    device: deviceAddr,
    hub: hubAddr,
    token,
    challengeDuration: CHALLENGE,
    salt: toHex(
      new Uint8Array(32).map((_, i) => (i === 31 ? Number(salt & 0xffn) : i === 30 ? Number(salt >> 8n) : 0)),
    ),
  };
}
function sign(state) {
  const digest = stateDigest(sep, state);
  return {
    state,
    deviceSig: signatureToHex(deviceKey.signDigest(digest)),
    hubSig: signatureToHex(hubKey.signDigest(digest)),
  };
}
function st(channelId, version, isFinal = false) {
  return {
    channelId,
    version,
    paidByDevice: 300n * version,
    paidByHub: 100n * version,
    round: 0n,
    locksRoot: `0x${'00'.repeat(32)}`,
    lockedByDevice: 0n,
    lockedByHub: 0n,
    isFinal,
  };
}

const AMOUNT = { eth: 10n ** 18n, usdt: 100_000_000n, blocking: 10n ** 20n };
async function openFunded(kind, token) {
  const r = await adjudicator.connect(device).open(params(token), AMOUNT[kind]);
  const d = await adjudicator.connect(hub).deposit(r.channelId, AMOUNT[kind] / 2n, { token });
  return { id: r.channelId, open: r.gasUsed, deposit: d.gasUsed };
}

const rows = new Map();
const put = (op, kind, gas) => {
  if (!rows.has(op)) rows.set(op, {});
  rows.get(op)[kind] = Number(gas);
};

for (const [kind, token] of [
  ['eth', ETH_TOKEN],
  ['usdt', usdt.address],
]) {
  // Warm-up: the adjudicator's first token balance costs a one-off fresh slot; measure the steady state.
  await openFunded(kind, token);

  const a = await openFunded(kind, token);
  put('open (with deposit)', kind, a.open);
  put('deposit (top-up)', kind, a.deposit);
  put(
    'cooperativeClose',
    kind,
    (await adjudicator.connect(relayer).cooperativeClose(sign(st(a.id, 7n, true)))).gasUsed,
  );

  const b = await openFunded(kind, token);
  const fc = (await adjudicator.connect(device).forceClose(sign(st(b.id, 5n)))).gasUsed;
  put('forceClose (signed state)', kind, fc);
  put('challenge', kind, (await adjudicator.connect(hub).challenge(sign(st(b.id, 6n)))).gasUsed);
  await chain.increaseTime(CHALLENGE);
  const se = (await adjudicator.connect(relayer).settle(b.id)).gasUsed;
  put('settle', kind, se);

  const c = await openFunded(kind, token);
  const fcz = (await adjudicator.connect(hub).forceClose({ state: st(c.id, 0n) })).gasUsed;
  put('forceClose (zero state, unsigned)', kind, fcz);
  const c2 = await openFunded(kind, token);
  const fc2 = (await adjudicator.connect(device).forceClose(sign(st(c2.id, 5n)))).gasUsed;
  await chain.increaseTime(CHALLENGE);
  put('forceClose + settle', kind, fc2 + (await adjudicator.connect(relayer).settle(c2.id)).gasUsed);

  // With pending locks in the registered state, half paid by each side, every preimage revealed before settle
  // (each lock costs its calldata at force close and settle, and one cold registry read at settle).
  for (const n of [1, 8]) {
    const x = await openFunded(kind, token);
    const now = BigInt((await chain.provider.getBlock('latest')).timestamp);
    const locks = Array.from({ length: n }, (_, i) => {
      const preimage = toHex(new Uint8Array(32).fill(n * 16 + i + 1));
      return {
        lock: {
          amount: 1000n + BigInt(i),
          hash: hashPreimage(preimage),
          expiry: now + 10n * CHALLENGE,
          payer: i % 2 === 0 ? 'device' : 'hub',
        },
        preimage,
      };
    });
    const list = locks.map((l) => l.lock);
    const state = { ...st(x.id, 5n), ...lockCommitment(list) };
    const f = (await adjudicator.connect(device).forceClose(sign(state), { locks: list })).gasUsed;
    for (const l of locks) await adjudicator.connect(relayer).reveal(l.preimage);
    await chain.increaseTime(CHALLENGE);
    const s = (await adjudicator.connect(relayer).settle(x.id, { locks: list })).gasUsed;
    put(`forceClose + settle, ${n} lock${n === 1 ? '' : 's'}`, kind, f + s);
  }
  put(
    'reveal (a preimage, first time)',
    kind,
    (await adjudicator.connect(relayer).reveal(toHex(new Uint8Array(32).fill(kind === 'eth' ? 0xe1 : 0xe2)))).gasUsed,
  );

  const batch = [];
  for (let i = 0; i < BATCH; i++) {
    const x = await openFunded(kind, token);
    await adjudicator.connect(device).forceClose(sign(st(x.id, 3n)));
    batch.push(x.id);
  }
  await chain.increaseTime(CHALLENGE);
  const sm = await adjudicator.connect(hub).settleMany(batch);
  if (sm.closed.length !== BATCH) throw new Error('settleMany did not settle the whole batch');
  put(`settleMany, per channel (batch of ${BATCH})`, kind, sm.gasUsed / BigInt(BATCH));

  const finals = [];
  for (let i = 0; i < BATCH; i++) finals.push(sign(st((await openFunded(kind, token)).id, 9n, true)));
  const cm = await adjudicator.connect(hub).cooperativeCloseMany(finals);
  put(`cooperativeCloseMany, per channel (batch of ${BATCH})`, kind, cm.gasUsed / BigInt(BATCH));
}

// withdraw: a payout whose push failed. ETH: the device's address rejects ETH (code set with hardhat_setCode);
// ERC20: a token that blocks the device. Both then pull to another address.
{
  await chain.provider.send('hardhat_setCode', [deviceAddr, '0x60006000fd']); // PUSH 0 PUSH 0 REVERT
  const id = (await adjudicator.connect(hub).open(params(ETH_TOKEN), AMOUNT.eth)).channelId;
  await adjudicator
    .connect(relayer)
    .cooperativeClose(sign({ ...st(id, 1n, true), paidByDevice: 0n, paidByHub: 1000n }));
  await chain.provider.send('hardhat_setCode', [deviceAddr, '0x']);
  put('withdraw (after a failed push)', 'eth', (await adjudicator.connect(device).withdraw(ETH_TOKEN, other)).gasUsed);

  const b = (await adjudicator.connect(hub).open(params(blocking.address), AMOUNT.blocking)).channelId;
  await adjudicator.connect(relayer).cooperativeClose(sign({ ...st(b, 1n, true), paidByDevice: 0n, paidByHub: 1000n }));
  put(
    'withdraw (after a failed push)',
    'usdt',
    (await adjudicator.connect(device).withdraw(blocking.address, other)).gasUsed,
  );
}
await chain.close();

const header = `| operation | ETH | ERC20 (USDT-like) |\n|---|---:|---:|`;
const fmt = (n) => (n === undefined ? '–' : n.toLocaleString('en-US'));
const table = [header, ...[...rows].map(([op, v]) => `| ${op} | ${fmt(v.eth)} | ${fmt(v.usdt)} |`)].join('\n');

const md = `# Adjudicator gas

Generated by \`npm run gas\` (scripts/gas.mjs): gasUsed of each operation on the compiled bytecode, run on an
in-process Hardhat EDR chain (hardfork osaka). Compiler: solc ${compilerInfo.version.split('+')[0]}, evmVersion
${compilerInfo.evmVersion}, optimizer ${compilerInfo.optimizerRuns} runs, viaIR ${compilerInfo.viaIR}.

${table}

How it is measured:
- Steady state: the adjudicator already holds the token and both parties hold token balances (a first-ever deposit
  of a token costs one extra fresh slot, ~17k). Payout recipients are existing accounts.
- \`open\`: the device opens and deposits; \`deposit\`: the hub tops up. ERC20 deposits include the balance-delta check
  (two \`balanceOf\` calls) that credits fee-on-transfer tokens correctly.
- Closes move money both ways (both payouts non-zero) and are submitted by a third party. \`cooperativeClose\`,
  \`settle\` and the batches include both payout pushes and the storage refunds of clearing the channel.
- \`forceClose + settle\` is the whole unilateral path without a challenge (the force close is sent by the device,
  whose own signature is then left out; the settle by a third party); \`challenge\` replaces the registered state.
  A force close writes no fresh storage slot: it clears both participant slots (refunded in the same transaction)
  and keeps a hash of the registration, which \`settle\` takes back as calldata. µRaiden's uncooperative close +
  settle, the figure issue #19 compares against, is 94,772.
- \`, 1 lock\` / \`, 8 locks\`: the same path with that many pending locks in the registered state (half paid by each
  side), each preimage revealed before the settle; \`reveal\` records a preimage for the first time (a fresh slot).
  The lock bound (\`MAX_LOCKS\` = 64) keeps a settle far below a block's gas limit (roughly 5k per lock).
- \`withdraw\` pulls a payout that was credited to \`owed\` because the push failed (ETH: recipient rejects ETH;
  ERC20: a token that blocks the recipient), sending it to another address. The ERC20 column uses the blocking
  test token (an OpenZeppelin ERC20) for this row.
`;
const docPath = join(root, 'contracts', 'GAS.md');
if (check) {
  // The contract tests run this: the committed table must be what the bytecode costs now.
  const committed = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '';
  if (committed !== md) {
    console.error(
      `contracts/GAS.md does not match the gas the compiled adjudicator uses now; run npm run gas.\n\nnow:\n${table}`,
    );
    process.exit(1);
  }
  console.log('contracts/GAS.md matches the compiled adjudicator');
  process.exit(0);
}
writeFileSync(docPath, md);

if (json) {
  console.log(JSON.stringify({ compiler: compilerInfo, gas: Object.fromEntries(rows) }, null, 2));
} else {
  console.log(table);
  console.log('\n(written to contracts/GAS.md)');
}
