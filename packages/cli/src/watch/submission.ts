/**
 * Parsing of a state handed to the watchtower (HTTP body, or a device store record): strict shape and range checks
 * on untrusted input, before any signature work. Signatures are checked by the watchtower itself.
 */
import { MalformedError } from '@trickle/protocol/errors';
import { toAddress, toBytes32 } from '@trickle/protocol/hex';
import { checkLock, MAX_LOCKS_ON_CHAIN, type Lock } from '@trickle/protocol/locks';
import { signatureFromHex, signatureToHex } from '@trickle/protocol/signer';
import {
  MAX_UINT256,
  MAX_UINT64,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type SignatureHex,
  type SignedState,
  type State,
} from '@trickle/protocol/types';

/** A state to watch, with the parameters of its channel. */
export interface StateSubmission {
  readonly params: ChannelParams;
  readonly latest: SignedState;
  /** The state's pending locks in committed order (needed to challenge or settle a state that has any). */
  readonly locks?: readonly Lock[] | undefined;
  /** Preimages of locks the hub pays the device, which the watchtower reveals on-chain when needed. */
  readonly preimages?: readonly { readonly hash: Bytes32; readonly preimage: Bytes32 }[] | undefined;
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function uint(v: unknown, field: string, max: bigint): bigint {
  let n: bigint;
  if (typeof v === 'bigint') n = v;
  else if (typeof v === 'string' && /^\d{1,78}$/.test(v)) n = BigInt(v);
  else if (typeof v === 'number' && Number.isSafeInteger(v)) n = BigInt(v);
  else throw new MalformedError(`${field} must be an unsigned integer (decimal string)`, { details: { field } });
  if (n < 0n || n > max) throw new MalformedError(`${field} is out of range`, { details: { field } });
  return n;
}

function address(v: unknown, field: string) {
  if (typeof v !== 'string') throw new MalformedError(`${field} must be an address`, { details: { field } });
  return toAddress(v);
}

function signature(v: unknown, field: string): SignatureHex | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new MalformedError(`${field} must be 0x-hex`, { details: { field } });
  return signatureToHex(signatureFromHex(v));
}

function parseParams(v: unknown): ChannelParams {
  if (!isObj(v)) throw new MalformedError('params must be an object');
  if (typeof v['salt'] !== 'string') throw new MalformedError('params.salt must be 32 bytes of hex');
  return {
    chainId: uint(v['chainId'], 'params.chainId', MAX_UINT256),
    adjudicator: address(v['adjudicator'], 'params.adjudicator'),
    device: address(v['device'], 'params.device'),
    hub: address(v['hub'], 'params.hub'),
    token: address(v['token'], 'params.token'),
    challengeDuration: uint(v['challengeDuration'], 'params.challengeDuration', MAX_UINT64),
    salt: toBytes32(v['salt']),
  };
}

function parseState(v: unknown): State {
  if (!isObj(v)) throw new MalformedError('state must be an object');
  if (typeof v['channelId'] !== 'string') throw new MalformedError('state.channelId must be 32 bytes of hex');
  if (typeof v['isFinal'] !== 'boolean') throw new MalformedError('state.isFinal must be a boolean');
  if (typeof v['locksRoot'] !== 'string') throw new MalformedError('state.locksRoot must be 32 bytes of hex');
  return {
    channelId: toBytes32(v['channelId']) as string as ChannelId,
    version: uint(v['version'], 'state.version', MAX_UINT64),
    paidByDevice: uint(v['paidByDevice'], 'state.paidByDevice', MAX_UINT256),
    paidByHub: uint(v['paidByHub'], 'state.paidByHub', MAX_UINT256),
    round: uint(v['round'], 'state.round', MAX_UINT64),
    locksRoot: toBytes32(v['locksRoot']),
    lockedByDevice: uint(v['lockedByDevice'], 'state.lockedByDevice', MAX_UINT256),
    lockedByHub: uint(v['lockedByHub'], 'state.lockedByHub', MAX_UINT256),
    isFinal: v['isFinal'],
  };
}

function bytes32(v: unknown, field: string): Bytes32 {
  if (typeof v !== 'string') throw new MalformedError(`${field} must be 32 bytes of hex`, { details: { field } });
  return toBytes32(v);
}

function parseLocks(v: unknown): Lock[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_LOCKS_ON_CHAIN)
    throw new MalformedError(`locks must be an array of at most ${MAX_LOCKS_ON_CHAIN} locks`);
  return v.map((l: unknown, i) => {
    if (!isObj(l)) throw new MalformedError(`locks[${i}] must be an object`);
    const lock: Lock = {
      amount: uint(l['amount'], `locks[${i}].amount`, MAX_UINT256),
      hash: bytes32(l['hash'], `locks[${i}].hash`),
      expiry: uint(l['expiry'], `locks[${i}].expiry`, MAX_UINT64),
      payer: l['payer'] as Lock['payer'],
    };
    checkLock(lock, `locks[${i}]`);
    return lock;
  });
}

function parsePreimages(v: unknown): { hash: Bytes32; preimage: Bytes32 }[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_LOCKS_ON_CHAIN)
    throw new MalformedError(`preimages must be an array of at most ${MAX_LOCKS_ON_CHAIN} entries`);
  return v.map((p: unknown, i) => {
    if (!isObj(p)) throw new MalformedError(`preimages[${i}] must be an object`);
    return {
      hash: bytes32(p['hash'], `preimages[${i}].hash`),
      preimage: bytes32(p['preimage'], `preimages[${i}].preimage`),
    };
  });
}

/**
 * Parse what a client hands the watchtower. Accepted shapes (extra fields are ignored):
 * - a channel record as the device store or the hub store writes it: `{ params, latest: { state, deviceSig, hubSig }, … }`;
 * - `{ record: <that> }`;
 * - `{ params, signed: { state, deviceSig, hubSig } }`;
 * - `{ params, state, deviceSig, hubSig }`.
 * Each may carry `locks` (the state's pending locks) and `preimages` (`[{ hash, preimage }]`), as a device record does.
 * @param value - parsed JSON (bigints as decimal strings or already revived)
 * @returns the parameters and the signed state, normalised (checksummed addresses, lowercase hex)
 * @throws MalformedError on any other shape or an out-of-range value
 * @example
 * ```ts
 * const { params, latest } = parseSubmission(parseJson(body));
 * ```
 */
export function parseSubmission(value: unknown): StateSubmission {
  if (!isObj(value)) throw new MalformedError('body must be a JSON object');
  const r = isObj(value['record']) ? value['record'] : value;
  const signedRaw = isObj(r['latest'])
    ? r['latest']
    : isObj(r['signed'])
      ? r['signed']
      : r['state'] !== undefined
        ? r
        : undefined;
  if (signedRaw === undefined) throw new MalformedError('expected a record ({ params, latest }) or { params, signed }');
  const latest: SignedState = {
    state: parseState(signedRaw['state']),
    deviceSig: signature(signedRaw['deviceSig'], 'deviceSig'),
    hubSig: signature(signedRaw['hubSig'], 'hubSig'),
  };
  const locks = parseLocks(r['locks']);
  const preimages = parsePreimages(r['preimages']);
  return {
    params: parseParams(r['params']),
    latest,
    ...(locks ? { locks } : {}),
    ...(preimages ? { preimages } : {}),
  };
}
