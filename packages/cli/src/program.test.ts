import { describe, expect, it } from 'vitest';
import { TrickleError } from '@trickle/protocol/errors';
import { CliError, EXIT } from './exit.js';
import { main, toCliError } from './program.js';
import { duration, isoTime, relative } from './format.js';
import { createWatchtower, type WatchtowerOptions } from './watch/watchtower.js';

const capture = () => {
  const io = {
    stdout: '',
    stderr: '',
    out: (s: string) => void (io.stdout += s),
    err: (s: string) => void (io.stderr += s),
  };
  return io;
};

describe('exit codes', () => {
  it('maps failures to the documented codes', () => {
    const revert = new TrickleError('CHAIN_REVERTED', 'StaleVersion(0x…, 5, 3)', {
      details: { error: 'StaleVersion', args: [] },
    });
    expect(toCliError(revert)).toMatchObject({
      exitCode: EXIT.REVERTED,
      code: 'CHAIN_REVERTED',
      hint: expect.stringMatching(/trickle show/),
    });
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(toCliError(new TrickleError('INTERNAL', 'chain request failed', { cause: refused })).exitCode).toBe(
      EXIT.NETWORK,
    );
    expect(toCliError(new TrickleError('BAD_SIGNATURE', 'bad')).exitCode).toBe(EXIT.USAGE);
    const own = new CliError(EXIT.NOTHING_TO_DO, 'STALE_VERSION', 'nothing newer');
    expect(toCliError(own)).toBe(own);
  });

  it('help is 0, usage errors are 1, and --json errors are one JSON object on stdout', async () => {
    let io = capture();
    expect(await main(['--help'], io)).toBe(0);
    expect(io.stdout).toMatch(/Exit codes:/);
    io = capture();
    expect(await main(['show'], io)).toBe(1);
    expect(io.stderr).toMatch(/missing required argument/);
    io = capture();
    expect(await main(['show', '0x12', '--json'], io)).toBe(1);
    expect(JSON.parse(io.stdout)).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT', exitCode: 1 } });
    io = capture();
    expect(await main(['export', `0x${'00'.repeat(32)}`], io)).toBe(1);
    expect(io.stderr).toMatch(/--store <dir> \(or TRICKLE_STORE\) is required/);
  });
});

describe('format', () => {
  it('prints times and durations', () => {
    expect(isoTime(0n)).toBe('1970-01-01T00:00:00.000Z');
    expect(duration(3_723n)).toBe('1h 2m 3s');
    expect(duration(0n)).toBe('0s');
    expect(relative(100n, 40n)).toBe('in 1m');
    expect(relative(40n, 100n)).toBe('1m ago');
  });
});

// packages/cli/README.md: "`--json` print one JSON object on stdout (`ok: true/false`; …)" and exit 1 for a usage
// error (bad arguments, missing option). Commander's own usage errors printed nothing on stdout under --json.
describe('--json on a usage error commander detects', () => {
  it.each([
    [['show', `0x${'11'.repeat(32)}`, '--bogus', '--json']],
    [['show', '--json']], // missing argument
    [['watch', '--log-level', 'loud', '--json']], // not one of the choices
    [['--json', 'frobnicate']], // unknown command
  ])('%j: exit 1 and one JSON object with ok: false on stdout', async (argv) => {
    const io = capture();
    expect(await main(argv, io)).toBe(1);
    const lines = io.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT', exitCode: 1 } });
    expect(io.stderr).toMatch(/error: /); // the human message still goes to stderr
  });

  it('without --json stdout stays empty, and --help is still exit 0', async () => {
    let io = capture();
    expect(await main(['show', '--bogus'], io)).toBe(1);
    expect(io.stdout).toBe('');
    io = capture();
    expect(await main(['--help', '--json'], io)).toBe(0);
    expect(io.stdout).toMatch(/Exit codes:/);
  });
});

// A duration or count out of range is a usage error (exit 1), refused before the chain is asked anything: `--timeout 0`
// or one past Node's timer limit (2^31 - 1 ms, ~24.8 days; a longer one fires after 1 ms) read as "cannot reach the
// chain" (exit 5, which scripts retry), and `--poll-ms 3000000000` ran the watchtower's poll loop every millisecond.
describe('numeric options out of range', () => {
  const id = `0x${'11'.repeat(32)}`;
  const chain = ['--rpc', 'http://127.0.0.1:9', '--adjudicator', `0x${'22'.repeat(20)}`, '--json'];
  it.each([
    [['show', id, '--timeout', '0', ...chain], '--timeout'],
    [['show', id, '--timeout', '3000000', ...chain], '--timeout'],
    [['show', id, '--timeout', '99999999999999999999', ...chain], '--timeout'],
    [['show', id, '--confirmations', '99999999999999999999', ...chain], '--confirmations'],
    [['watch', '--db', '/nonexistent/db', '--poll-ms', '3000000000', ...chain], '--poll-ms'],
    [['watch', '--db', '/nonexistent/db', '--store-poll-ms', '3000000000', ...chain], '--store-poll-ms'],
    [['watch', '--db', '/nonexistent/db', '--sweep-ms', '3000000000', ...chain], '--sweep-ms'],
  ])('%j: exit 1 INVALID_ARGUMENT naming %s', async (argv, name) => {
    const io = capture();
    expect(await main(argv, io)).toBe(1);
    const out = JSON.parse(io.stdout.trim()) as { error: { code: string; message: string } };
    expect(out).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT', exitCode: 1 } });
    expect(out.error.message).toContain(name);
  });
});

describe('createWatchtower durations', () => {
  it('refuses one past the timer limit (INVALID_ARGUMENT)', () => {
    const base = { provider: {}, sender: {}, adjudicator: `0x${'22'.repeat(20)}`, dbPath: '/nonexistent/db' };
    for (const k of ['pollMs', 'recheckMs', 'retryMaxMs', 'txTimeoutMs'])
      expect(() => createWatchtower({ ...base, [k]: 3_000_000_000 } as unknown as WatchtowerOptions)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
  });
});

// An --rpc that is no http(s) URL is the user's mistake (exit 1), not a node that cannot be reached (exit 5, retried).
describe('--rpc that is no http(s) URL', () => {
  it.each([['not a url'], ['ftp://127.0.0.1:8545'], ['127.0.0.1:8545']])('%s: exit 1 INVALID_ARGUMENT', async (rpc) => {
    const io = capture();
    const argv = ['show', `0x${'11'.repeat(32)}`, '--rpc', rpc, '--adjudicator', `0x${'22'.repeat(20)}`, '--json'];
    expect(await main(argv, io)).toBe(1);
    expect(JSON.parse(io.stdout.trim())).toMatchObject({ ok: false, error: { code: 'INVALID_ARGUMENT', exitCode: 1 } });
  });
});
