import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileChannelStore } from '@trickle/client/store';
import { isTrickleError } from '@trickle/protocol/errors';
import { tempDirs } from './helpers/temp-dirs.mjs';

/**
 * The device store's one-writer lock as a firmware author meets it: a device that died (power loss, SIGKILL) and is
 * started again by its supervisor while an operator starts it by hand too — several processes on one store at the
 * same instant, each seeing the dead holder's lock. Real processes, real files.
 */
const tempDir = tempDirs('trickle-redteam-device-store-');
const children = new Set<ReturnType<typeof spawn>>();
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

/** A process id no process has (one that ran and exited). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

/**
 * A process that, at `startAt` (epoch ms, busy-waiting so that all start together), takes the store in `dir` and
 * prints `got` or `err <code> <reason>`, then holds it until killed.
 */
function taker(dir: string, startAt: number) {
  const code = `
    const { fileChannelStore } = await import('@trickle/client/store');
    const store = fileChannelStore(${JSON.stringify(dir)});
    while (Date.now() < ${startAt}) {}
    try { await store.acquire(); console.log('got'); }
    catch (e) { console.log('err', e.code, e.details?.reason); }
    setInterval(() => {}, 1000);
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', code], {
    cwd: new URL('.', import.meta.url),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(proc);
  const line = new Promise<string>((resolve) => {
    let out = '';
    proc.stdout!.on('data', (d) => {
      out += String(d);
      if (out.includes('\n')) resolve(out.trim());
    });
  });
  return { proc, line };
}

describe('red team: the device store lock', () => {
  it('several processes started at once on a store whose holder died: exactly one takes it, the others are refused IN_USE', async () => {
    const dead = deadPid();
    for (let round = 0; round < 8; round++) {
      const dir = tempDir();
      // the dead holder's lock, as the earlier format (`.lock`) or as a generation file this version writes
      writeFileSync(`${dir}/${round % 2 === 0 ? '.lock' : '.lock.1'}`, `${dead}\n`);
      const startAt = Date.now() + 900;
      const procs = Array.from({ length: 4 }, () => taker(dir, startAt));
      const lines = await Promise.all(procs.map((p) => p.line));
      expect(
        lines.filter((l) => l === 'got'),
        `round ${round}: ${lines.join(', ')}`,
      ).toHaveLength(1);
      expect(lines.filter((l) => l !== 'got')).toEqual(Array(3).fill('err STORE_FAILURE IN_USE'));
      // this process is refused too, naming the one that holds it
      const holder = procs[lines.indexOf('got')]!.proc.pid!;
      const e = await fileChannelStore(dir).acquire!().then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(isTrickleError(e, 'STORE_FAILURE') && e.details).toMatchObject({ reason: 'IN_USE', pid: holder });
      for (const p of procs) {
        p.proc.kill('SIGKILL');
        children.delete(p.proc);
      }
    }
  });

  it('a connect that fails gives the store back: another process takes it while the failed one lives on', async () => {
    const dir = tempDir();
    // A port nothing listens on: the connect fails DISCONNECTED after its one attempt.
    const code = `
      const { TrickleClient, fileChannelStore } = await import('@trickle/client');
      const { nobleSigner } = await import('@trickle/protocol/signer');
      try {
        await TrickleClient.connect({
          url: 'ws://127.0.0.1:9/',
          signer: nobleSigner('0x${'44'.repeat(32)}'),
          store: fileChannelStore(${JSON.stringify(dir)}),
          connectTimeoutMs: 2000,
          reconnect: { maxAttempts: 1 },
        });
        console.log('connected');
      } catch (e) { console.log('failed', e.code); }
      setInterval(() => {}, 1000);
    `;
    const failed = spawn(process.execPath, ['--input-type=module', '-e', code], {
      cwd: new URL('.', import.meta.url),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.add(failed);
    const said = await new Promise<string>((resolve) => {
      let out = '';
      failed.stdout!.on('data', (d) => {
        out += String(d);
        if (out.includes('\n')) resolve(out.trim());
      });
    });
    expect(said).toBe('failed DISCONNECTED');
    const next = taker(dir, 0);
    expect(await next.line).toBe('got'); // was: err STORE_FAILURE IN_USE until the failed process exited
    for (const p of [failed, next.proc]) {
      p.kill('SIGKILL');
      children.delete(p);
    }
  });

  it('a store closed by its holder is taken by the next process; one left by a killed holder too', async () => {
    const dir = tempDir();
    const a = fileChannelStore(dir);
    await a.acquire!();
    await a.close!();
    const b = taker(dir, 0);
    expect(await b.line).toBe('got');
    b.proc.kill('SIGKILL');
    await new Promise((r) => b.proc.once('exit', r));
    children.delete(b.proc);
    const c = taker(dir, 0);
    expect(await c.line).toBe('got');
    // the lock files left: the holder's only (older generations cleared)
    const locks = readdirSync(dir).filter((n) => n.startsWith('.lock'));
    expect(locks).toHaveLength(1);
    expect(readFileSync(`${dir}/${locks[0]}`, 'utf8')).toBe(`${c.proc.pid}\n`);
    c.proc.kill('SIGKILL');
    children.delete(c.proc);
  });

  it('a store of this process left open (a client dropped to restart it) and closed after the new one took the store: no older lock file comes back', async () => {
    const dir = tempDir();
    const first = fileChannelStore(dir);
    await first.acquire!();
    const second = fileChannelStore(dir);
    await second.acquire!();
    await first.close!();
    expect(readdirSync(dir).filter((n) => n.startsWith('.lock'))).toEqual(['.lock.2']);
    expect(readFileSync(`${dir}/.lock.2`, 'utf8')).toBe(`${process.pid}\n`);
    await second.close!();
    expect(readFileSync(`${dir}/.lock.2`, 'utf8')).toBe('released\n');
  });
});
