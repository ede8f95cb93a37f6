import { Interface } from 'ethers';
import { describe, expect, it } from 'vitest';
import { TrickleError } from '@trickle/protocol/errors';
import { decodeChainError, decodeRevertData, isChainRevert, revertDataOf } from './errors.js';
import { adjudicatorInterface } from './events.js';

const staleVersion = adjudicatorInterface.encodeErrorResult('StaleVersion', [`0x${'aa'.repeat(32)}`, 5n, 4n]);

describe('decodeChainError', () => {
  it('decodes a custom error wherever the revert data sits', () => {
    for (const shape of [
      { code: 'CALL_EXCEPTION', data: staleVersion },
      { info: { error: { code: -32603, message: 'reverted', data: staleVersion } } },
      { error: { error: { data: { message: 'x', data: staleVersion } } } },
    ]) {
      const e = decodeChainError(shape);
      expect(e.code).toBe('CHAIN_REVERTED');
      expect(e.details).toMatchObject({
        error: 'StaleVersion',
        args: [`0x${'aa'.repeat(32)}`, 5n, 4n],
        namedArgs: { registered: 5n, given: 4n },
      });
      expect(isChainRevert(e, 'StaleVersion')).toBe(true);
      expect(isChainRevert(e, 'ChannelExists')).toBe(false);
    }
  });

  it('decodes errors of the libraries the adjudicator uses and of the test tokens', () => {
    const oz = new Interface(['error ECDSAInvalidSignatureS(bytes32 s)', 'error RecipientBlocked(address recipient)']);
    expect(
      decodeRevertData(oz.encodeErrorResult('ECDSAInvalidSignatureS', [`0x${'11'.repeat(32)}`]) as never)?.error,
    ).toBe('ECDSAInvalidSignatureS');
    expect(decodeRevertData(oz.encodeErrorResult('RecipientBlocked', [`0x${'22'.repeat(20)}`]) as never)?.error).toBe(
      'RecipientBlocked',
    );
  });

  it('decodes the built-in Error(string) and Panic(uint256)', () => {
    const builtin = new Interface(['error Error(string)', 'error Panic(uint256)']);
    expect(decodeChainError({ data: builtin.encodeErrorResult('Error', ['boom']) }).details).toMatchObject({
      error: 'Error',
      args: ['boom'],
    });
    expect(decodeChainError({ data: builtin.encodeErrorResult('Panic', [0x11n]) }).details).toMatchObject({
      error: 'Panic',
      args: [0x11n],
    });
  });

  it('reports unknown and empty reverts as CHAIN_REVERTED with error "unknown"', () => {
    expect(decodeChainError({ data: '0xdeadbeef' }).details).toMatchObject({ error: 'unknown', data: '0xdeadbeef' });
    expect(decodeChainError({ data: '0x' }).details).toMatchObject({ error: 'unknown' });
    expect(decodeChainError({ code: 'CALL_EXCEPTION', data: null }).code).toBe('CHAIN_REVERTED');
  });

  it('passes TrickleErrors through and wraps anything else as INTERNAL with the cause', () => {
    const t = new TrickleError('TIMEOUT', 'slow');
    expect(decodeChainError(t)).toBe(t);
    const net = Object.assign(new Error('connect ECONNREFUSED'), { code: 'NETWORK_ERROR' });
    const e = decodeChainError(net);
    expect([e.code, e.cause, e.details['ethersCode']]).toEqual(['INTERNAL', net, 'NETWORK_ERROR']);
  });

  it('does not mistake a transaction payload for revert data', () => {
    expect(revertDataOf({ transaction: { data: staleVersion } })).toBeUndefined();
  });
});
