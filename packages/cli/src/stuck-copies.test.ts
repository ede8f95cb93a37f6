import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeStuckCopies, encodeStuckCopies, type StuckCopy } from '@trickle/chain/types';
import type { Address } from '@trickle/protocol/types';
import { fileStuckCopies } from './stuck-copies.js';

/**
 * The CLI's memory of stuck replace-by-fee copies, one file per process: a command takes over the copies of a process
 * that is gone, never those of one still running (which has them in flight, or will replace them itself).
 */
const ACCOUNT = '0x1111111111111111111111111111111111111111' as Address;
const copy = (nonce: number, fee = 10n): StuckCopy => ({ nonce, maxFeePerGas: fee, maxPriorityFeePerGas: 1n });
const nonces = (copies: readonly StuckCopy[]) => copies.map((c) => c.nonce).sort((a, b) => a - b);

describe('fileStuckCopies', () => {
  let dir: string;
  let accountDir: string;
  let running: ChildProcess;
  let gonePid: number;
  const warnings: string[] = [];
  const store = () =>
    fileStuckCopies(
      dir,
      async () => 31337n,
      (line) => warnings.push(line),
    );

  beforeAll(() => {
    running = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)'], { stdio: 'ignore' });
    const exited = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
      encoding: 'utf8',
    });
    gonePid = Number(exited.stdout);
    expect(gonePid).toBeGreaterThan(0);
  });
  afterAll(() => {
    running.kill('SIGKILL');
  });
  const fresh = () => {
    dir = mkdtempSync(join(tmpdir(), 'trickle-stuck-copies-'));
    accountDir = join(dir, 'stuck-copies', `31337-${ACCOUNT}`);
    mkdirSync(accountDir, { recursive: true });
    warnings.length = 0;
  };

  it("leaves a running process's copies to it, and takes over those of a process that is gone", async () => {
    fresh();
    const live = join(accountDir, `${running.pid}.0a0b.json`);
    writeFileSync(live, encodeStuckCopies([copy(5)]));
    writeFileSync(join(accountDir, `${gonePid}.0c0d.json`), encodeStuckCopies([copy(3), copy(4)]));
    const a = store();
    expect(nonces(await a.load(ACCOUNT))).toEqual([3, 4]);
    // The running process's file is untouched; the gone one's is this process's now: no other command takes it.
    expect(readFileSync(live, 'utf8')).toBe(encodeStuckCopies([copy(5)]));
    expect(existsSync(join(accountDir, `${gonePid}.0c0d.json`))).toBe(false);
    expect(await store().load(ACCOUNT)).toEqual([]);

    // Saving writes this process's list and drops the file it took over; the running process's stays.
    await a.save(ACCOUNT, [copy(4, 20n)]);
    const names = readdirSync(accountDir).sort();
    expect(names).toHaveLength(2);
    const own = names.find((n) => n !== `${running.pid}.0a0b.json`)!;
    expect(own).toMatch(new RegExp(`^${process.pid}\\.[0-9a-f]+\\.json$`));
    expect(decodeStuckCopies(readFileSync(join(accountDir, own), 'utf8'))).toEqual([copy(4, 20n)]);
    // This process's own file is not read back as stuck (its copies are in its memory, in flight or abandoned).
    expect(await store().load(ACCOUNT)).toEqual([]);

    // Nothing stuck: the file goes.
    await a.save(ACCOUNT, []);
    expect(readdirSync(accountDir)).toEqual([`${running.pid}.0a0b.json`]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes over a file an earlier process with this pid left, and the earlier format’s single file', async () => {
    fresh();
    writeFileSync(join(accountDir, `${process.pid}.ffff.json`), encodeStuckCopies([copy(7)]));
    writeFileSync(`${accountDir}.json`, encodeStuckCopies([copy(8)]));
    const a = store();
    expect(nonces(await a.load(ACCOUNT))).toEqual([7, 8]);
    expect(existsSync(`${accountDir}.json`)).toBe(false);
    await a.save(ACCOUNT, [copy(7), copy(8)]);
    expect(readdirSync(accountDir)).toHaveLength(1);
    rmSync(dir, { recursive: true, force: true });
  });

  it('two stores of one process take files over under names of their own', async () => {
    fresh();
    writeFileSync(join(accountDir, `${gonePid}.01.json`), encodeStuckCopies([copy(1)]));
    const a = store();
    expect(nonces(await a.load(ACCOUNT))).toEqual([1]);
    writeFileSync(join(accountDir, `${gonePid}.02.json`), encodeStuckCopies([copy(2)]));
    const b = store();
    expect(nonces(await b.load(ACCOUNT))).toEqual([2]);
    // a's save removes the file it took, not b's: b's copy is still on disk until b saves.
    await a.save(ACCOUNT, []);
    const left = readdirSync(accountDir).map((n) => decodeStuckCopies(readFileSync(join(accountDir, n), 'utf8')));
    expect(left.flat().map((c) => c.nonce)).toEqual([2]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a damaged file as empty, with a warning, and removes it once its list is written', async () => {
    fresh();
    writeFileSync(join(accountDir, `${gonePid}.0e.json`), '{not json');
    writeFileSync(join(accountDir, '.tmp-being-written'), 'x');
    const a = store();
    expect(await a.load(ACCOUNT)).toEqual([]);
    expect(warnings.join('\n')).toMatch(/ignoring .*stuck transaction may not be replaced/);
    await a.save(ACCOUNT, [copy(1)]);
    // The damaged file is gone; a file not named as a process's list is left alone.
    expect(readdirSync(accountDir).filter((n) => !n.startsWith(`${process.pid}.`))).toEqual(['.tmp-being-written']);
    rmSync(dir, { recursive: true, force: true });
  });
});
