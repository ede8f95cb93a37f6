// Generates protocol-spec/vectors/*.json once from fixed keys and inputs. The vectors are then checked by the
// protocol tests (both crypto backends, plus ethers v6 as an independent EIP-712 implementation) and by the
// contract tests. Re-running must reproduce the committed files byte for byte (RFC 6979 signatures).
import { writeFileSync } from 'node:fs';
import {
  nobleSigner,
  channelIdOf,
  domainSeparator,
  trickleDomain,
  stateDigest,
  STATE_TYPES,
  DOMAIN_NAME,
  DOMAIN_VERSION,
  toHex,
  encodeFrame,
  authDigest,
  ETH_TOKEN,
  keccak256,
  NO_LOCKS,
  lockCommitment,
  encodeLock,
  encodeLocks,
  hashPreimage,
} from '@trickle/protocol';
import { getCreateAddress } from 'ethers';

const dir = new URL('../protocol-spec/vectors/', import.meta.url);
const keys = {
  device: '0x' + '11'.repeat(32),
  hub: '0x' + '22'.repeat(32),
  other: '0x' + '33'.repeat(32),
};
const signers = Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, nobleSigner(v)]));
const j = (o) =>
  JSON.stringify(o, (_, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? toHex(v) : v), 2) +
  '\n';

const adjudicator = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
// The adjudicator as the contract tests deploy it: the first contract of local-chain account 0 on chain 31337,
// so contracts/test/vectors.test.ts can check these very digests and ids against the deployed bytecode.
const localDeployer = nobleSigner(toHex(keccak256(new TextEncoder().encode('trickle/local-chain/account/0')))).address;
const localAdjudicator = getCreateAddress({ from: localDeployer, nonce: 0 });
const usdt = '0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512';
const paramsList = [
  {
    chainId: 31337n,
    adjudicator,
    device: signers.device.address,
    hub: signers.hub.address,
    token: usdt,
    challengeDuration: 3600n,
    salt: '0x' + '00'.repeat(31) + '01',
  },
  {
    chainId: 1n,
    adjudicator,
    device: signers.device.address,
    hub: signers.hub.address,
    token: ETH_TOKEN,
    challengeDuration: 86400n,
    salt: '0x' + 'ff'.repeat(32),
  },
  {
    chainId: 42161n,
    adjudicator: '0x000000000000000000000000000000000000dEaD',
    device: signers.other.address,
    hub: signers.hub.address,
    token: usdt,
    challengeDuration: 60n,
    salt: '0x' + 'ab'.repeat(32),
  },
  {
    chainId: 31337n,
    adjudicator: localAdjudicator,
    device: signers.device.address,
    hub: signers.hub.address,
    token: ETH_TOKEN,
    challengeDuration: 600n,
    salt: '0x' + '42'.repeat(32),
  },
];
writeFileSync(
  new URL('keys.json', dir),
  j({
    description: 'Test keys (never use with real funds) and their EIP-55 addresses.',
    keys: Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, { privateKey: v, address: signers[k].address }])),
  }),
);
writeFileSync(
  new URL('channel-ids.json', dir),
  j({
    description:
      'channelId = keccak256(abi.encode(uint256 chainId, address adjudicator, address device, address hub, address token, uint64 challengeDuration, bytes32 salt))',
    vectors: paramsList.map((params) => ({ params, channelId: channelIdOf(params) })),
  }),
);

// Locks: preimages are fixed bytes, hashes are keccak256 of them; one list per direction mix.
const preimages = ['0x' + 'a1'.repeat(32), '0x' + 'b2'.repeat(32), '0x' + '00'.repeat(31) + '07'];
const lockLists = [
  [],
  [{ amount: 500n, hash: hashPreimage(preimages[0]), expiry: 1_900_000_000n, payer: 'device' }],
  [
    { amount: 500n, hash: hashPreimage(preimages[0]), expiry: 1_900_000_000n, payer: 'device' },
    { amount: 2_000_000n, hash: hashPreimage(preimages[1]), expiry: 1_900_000_600n, payer: 'hub' },
    { amount: (1n << 200n) + 3n, hash: hashPreimage(preimages[2]), expiry: 18446744073709551615n, payer: 'device' },
  ],
];
writeFileSync(
  new URL('locks.json', dir),
  j({
    description:
      'Lock commitments: locksRoot = bytes32(0) for no locks, else keccak256 of the concatenated abi.encode(uint256 amount, bytes32 hash, uint64 expiry, uint8 payer) of each lock in list order (payer 0 = device, 1 = hub); lockedByDevice / lockedByHub are the per-payer totals. Each hash is keccak256 of a 32-byte preimage.',
    preimages: preimages.map((preimage) => ({ preimage, hash: hashPreimage(preimage) })),
    vectors: lockLists.map((locks) => ({
      locks,
      encoded: locks.map((l) => toHex(encodeLock(l))),
      ...lockCommitment(locks),
    })),
  }),
);
const withLocks = lockCommitment(lockLists[2]);

const states = [
  [0, { version: 1n, paidByDevice: 1n, paidByHub: 0n, round: 0n, ...NO_LOCKS, isFinal: false }, 'device'],
  [0, { version: 2n, paidByDevice: 1_500_000n, paidByHub: 250n, round: 3n, ...NO_LOCKS, isFinal: false }, 'hub'],
  [0, { version: 3n, paidByDevice: 1_500_000n, paidByHub: 250n, round: 3n, ...NO_LOCKS, isFinal: true }, 'device'],
  [
    1,
    {
      version: 18446744073709551615n,
      paidByDevice: (1n << 256n) - 1n,
      paidByHub: 0n,
      round: 18446744073709551615n,
      ...NO_LOCKS,
      isFinal: false,
    },
    'device',
  ],
  [2, { version: 7n, paidByDevice: 0n, paidByHub: 10n ** 30n, round: 0n, ...NO_LOCKS, isFinal: false }, 'hub'],
  [3, { version: 9n, paidByDevice: 123_456n, paidByHub: 789n, round: 4n, ...NO_LOCKS, isFinal: false }, 'device'],
  [3, { version: 10n, paidByDevice: 123_456n, paidByHub: 789n, round: 4n, ...NO_LOCKS, isFinal: true }, 'hub'],
  [3, { version: 11n, paidByDevice: 123_456n, paidByHub: 789n, round: 4n, ...withLocks, isFinal: false }, 'device'],
  [
    0,
    {
      version: 4n,
      paidByDevice: 1_500_000n,
      paidByHub: 250n,
      round: 3n,
      ...lockCommitment(lockLists[1]),
      isFinal: false,
    },
    'hub',
  ],
];
const signed = [];
for (const [pi, s, who] of states) {
  const params = paramsList[pi];
  const channelId = channelIdOf(params);
  const state = { channelId, ...s };
  const domain = trickleDomain(params.chainId, params.adjudicator);
  const digest = stateDigest(domainSeparator(domain), state);
  const signerKey = who === 'hub' ? 'hub' : pi === 2 ? 'other' : 'device';
  const signer = signers[signerKey];
  signed.push({
    domain: {
      name: DOMAIN_NAME,
      version: DOMAIN_VERSION,
      chainId: params.chainId,
      verifyingContract: params.adjudicator,
    },
    types: STATE_TYPES,
    primaryType: 'State',
    message: state,
    digest: toHex(digest),
    signer: signer.address,
    signerRole: who,
    privateKey: keys[signerKey],
    signature: toHex(signer.signDigest(digest)),
  });
}
writeFileSync(
  new URL('signed-states.json', dir),
  j({
    description:
      'EIP-712 signed states: domain/types/primaryType/message as eth_signTypedData_v4 takes them (uints as decimal strings), the digest, signer and 65-byte r||s||v signature.',
    vectors: signed,
  }),
);

const p0 = paramsList[0];
const ch0 = channelIdOf(p0);
const st = {
  channelId: ch0,
  version: 2n,
  paidByDevice: 1_500_000n,
  paidByHub: 250n,
  round: 3n,
  ...NO_LOCKS,
  isFinal: false,
};
const sep0 = domainSeparator(trickleDomain(p0.chainId, p0.adjudicator));
/** `role`'s real signature over `state` in the channel's domain (a frame's `sig` is its sender's). */
const signBy = (role, state) => signers[role].signDigest(stateDigest(sep0, state));
const sig = signBy('device', st);
const closeSt = { ...st, version: 3n, isFinal: true };
const lockPreimage = '0x' + '09'.repeat(32);
const lockHash = hashPreimage(lockPreimage);
const frameLocks = [{ amount: 700n, hash: lockHash, expiry: 1_900_000_000n, payer: 'device' }];
const lockedSt = { ...st, version: 3n, ...lockCommitment(frameLocks) };
const claimedSt = { ...st, version: 4n, paidByDevice: st.paidByDevice + 700n };
const expiredSt = { ...st, version: 4n };
const nonce = '0x' + '5a'.repeat(32);
const frames = [
  { t: 'challenge', id: 0, nonce, hub: signers.hub.address, chainId: 31337n, adjudicator },
  {
    t: 'auth',
    id: 1,
    device: signers.device.address,
    nonce,
    sig: signers.device.signDigest(
      authDigest(
        domainSeparator(trickleDomain(31337n, adjudicator)),
        signers.device.address,
        signers.hub.address,
        nonce,
      ),
    ),
  },
  { t: 'ok', id: 1 },
  { t: 'open', id: 2, params: p0 },
  { t: 'sync', id: 3, channelId: ch0, latest: null },
  { t: 'update', id: 4, state: st, sig },
  {
    t: 'update',
    id: 5,
    state: st,
    sig,
    route: { to: signers.other.address, amount: 1000n, paymentId: '0x' + '01'.repeat(32) },
  },
  { t: 'ack', id: 4, channelId: ch0, version: 2n, sig: signBy('hub', st) },
  {
    t: 'reject',
    id: 4,
    channelId: ch0,
    code: 'STALE_VERSION',
    message: 'version is not newer than the current one',
    latest: { state: st, deviceSig: toHex(sig), hubSig: toHex(signBy('hub', st)) },
  },
  { t: 'close', id: 6, state: closeSt, sig: signBy('device', closeSt) },
  {
    t: 'order',
    id: 7,
    order: { id: '0x' + '02'.repeat(32), market: 'kwh.zone-1', side: 'bid', quantity: 5n, price: 120_000n, round: 9n },
    sig,
  },
  { t: 'accepted', id: 7, arrival: 1n },
  { t: 'round', id: 0, round: 10n, feeBps: 25n },
  { t: 'clearing', id: 0, round: 9n, record: new Uint8Array([0x7b, 0x7d]), sig },
  // the last of the 3 parts of a record longer than a blob (§7)
  { t: 'clearing', id: 0, round: 9n, record: new Uint8Array([0x5d, 0x7d]), sig, part: 2, parts: 3 },
  { t: 'receipt', id: 0, paymentId: '0x' + '01'.repeat(32), delivered: true },
  {
    t: 'update',
    id: 8,
    state: st,
    sig,
    route: {
      to: signers.other.address,
      amount: 1000n,
      paymentId: '0x' + '03'.repeat(32),
      receipt: { resource: '0x' + '04'.repeat(32), nonce: '0x' + '05'.repeat(32), expiry: 1_900_000_000n },
    },
  },
  {
    t: 'update',
    id: 9,
    state: st,
    sig,
    route: {
      to: signers.other.address,
      amount: 1000n,
      paymentId: '0x' + '06'.repeat(32),
      stream: { streamId: '0x' + '07'.repeat(32), ratePerSecond: 500n, total: 3000n, final: false },
    },
  },
  { t: 'receipt', id: 0, paymentId: '0x' + '03'.repeat(32), delivered: true, hubSig: sig },
  {
    t: 'stream',
    id: 0,
    from: signers.device.address,
    paymentId: '0x' + '06'.repeat(32),
    amount: 1000n,
    stream: { streamId: '0x' + '07'.repeat(32), ratePerSecond: 500n, total: 3000n, final: true },
  },
  { t: 'error', id: 0, code: 'MALFORMED', message: 'unknown field x' },
  // Conditional transfers: an update adding a lock (with a route: forwarded as a lock), one claiming a lock with its
  // preimage, one taking an expired lock back, a payee's claim frame, and a sync carrying its state's lock list.
  {
    t: 'update',
    id: 10,
    state: lockedSt,
    sig: signBy('device', lockedSt),
    lock: { amount: 700n, hash: lockHash, expiry: 1_900_000_000n },
    route: { to: signers.other.address, amount: 700n, paymentId: '0x' + '08'.repeat(32) },
  },
  {
    t: 'update',
    id: 11,
    state: claimedSt,
    sig: signBy('device', claimedSt),
    unlock: { hash: lockHash, preimage: lockPreimage },
  },
  { t: 'update', id: 12, state: expiredSt, sig: signBy('device', expiredSt), unlock: { hash: lockHash } },
  { t: 'claim', id: 13, channelId: ch0, unlock: { hash: lockHash, preimage: lockPreimage } },
  {
    t: 'sync',
    id: 14,
    channelId: ch0,
    latest: { state: lockedSt, deviceSig: toHex(signBy('device', lockedSt)), hubSig: toHex(signBy('hub', lockedSt)) },
    locks: encodeLocks(frameLocks),
  },
  { t: 'ping', id: 15 },
  { t: 'pong', id: 15 },
  { t: 'outcome', id: 16, paymentId: '0x' + '03'.repeat(32) },
  { t: 'receipt', id: 16, paymentId: '0x' + '03'.repeat(32), delivered: false, pending: true },
];
writeFileSync(
  new URL('frames.json', dir),
  j({
    description:
      "Wire frames: the message (uints as decimal strings, binary as 0x-hex) and its MessagePack encoding. Signatures are real, by the sender's key of keys.json in the challenge's domain (auth over Auth; update, close and ack over the frame's state, or the state at the ack's version; a signed state's two), except the order's, the clearing's and the receipt's hubSig, which are placeholders of the right length.",
    vectors: frames.map((m) => ({ message: m, frame: toHex(encodeFrame(m)) })),
  }),
);
console.log('wrote vectors');
