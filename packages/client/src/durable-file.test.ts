import {
  lstatSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { replaceFile } from './durable-file.js';

/** Whole-file writes (the client's file stores, `trickle export`): the file is replaced whole, nothing else is touched. */
describe('replaceFile', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('replaces the file whole, mode 600, and leaves no temporary file', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trickle-durable-'));
    const path = join(dir, 'backup.json');
    writeFileSync(path, 'old');
    await replaceFile(path, 'new');
    expect(readFileSync(path, 'utf8')).toBe('new');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['backup.json']);
  });

  it('does not write through a link planted under the temporary name, nor over a stale temporary file', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trickle-durable-'));
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious');
    const path = join(dir, 'backup.json');
    const tmp = join(dir, '.backup.json.planted.tmp');
    symlinkSync(victim, tmp);
    await replaceFile(path, 'the backup', tmp);
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    expect(readFileSync(path, 'utf8')).toBe('the backup');
    expect(lstatSync(path).isSymbolicLink()).toBe(false);
    // A stale temporary file (a dead process with this pid) is replaced, not refused.
    writeFileSync(tmp, 'stale');
    await replaceFile(path, 'again', tmp);
    expect(readFileSync(path, 'utf8')).toBe('again');
    expect(readdirSync(dir).sort()).toEqual(['backup.json', 'victim']);
  });
});
