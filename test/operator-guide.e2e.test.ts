/**
 * docs/operator.md, followed as written: its shell blocks run in order in one bash session (real chain server, real
 * hub process, the device example, on loopback), and the README's device snippet is examples/device.mjs's marked
 * region, character for character.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** The fenced blocks of a markdown text with the given info string. */
function blocks(markdown: string, lang: string): string[] {
  return [...markdown.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('the README device snippet', () => {
  it('is examples/device.mjs between its readme markers', () => {
    const example = read('examples/device.mjs');
    const region = example.slice(
      example.indexOf('// #region readme\n') + '// #region readme\n'.length,
      example.indexOf('// #endregion readme'),
    );
    expect(region.length).toBeGreaterThan(200);
    const readme = read('README.md');
    const usingIt = readme.slice(
      readme.indexOf('## Using it'),
      readme.indexOf('\n## ', readme.indexOf('## Using it') + 1),
    );
    expect(blocks(usingIt, 'js')).toEqual([region]);
  });
});

describe('docs/operator.md', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'trickle-operator-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('runs as written: chain, deploy, hub, a paying device, dashboard API, metrics, stop', async () => {
    const script = blocks(read('docs/operator.md'), 'sh');
    expect(script.length).toBeGreaterThanOrEqual(6);
    const [chainPort, hubPort] = [await freePort(), await freePort()];
    // A clean environment as an operator's shell would have it: no TRICKLE_* settings from the test runner.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('TRICKLE_') && !k.startsWith('npm_')),
    );
    const child = spawn('bash', ['-e', '-o', 'pipefail', '-c', script.join('\n')], {
      cwd: ROOT,
      env: { ...env, CHAIN_PORT: String(chainPort), HUB_PORT: String(hubPort), TMPDIR: scratch },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: whatever it started is stopped with it if a step fails
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const code = await new Promise<number | null>((resolve) => {
      const killer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 150_000);
      child.once('exit', (c) => {
        clearTimeout(killer);
        resolve(c);
      });
    });
    try {
      process.kill(-child.pid!, 'SIGKILL'); // nothing should be left; if a step failed, the chain and hub are
    } catch {
      /* the group is gone: the guide's last step stopped everything */
    }
    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr.slice(-3_000)}`).toBe(0);

    // step 3: the hub's /health answered; step 4: the device's summary; step 5: metrics and the closed channel
    const lines = stdout.split('\n');
    expect(JSON.parse(lines.find((l) => l.startsWith('{"status"'))!)).toMatchObject({ status: 'ok' });
    const device = JSON.parse(lines.find((l) => l.startsWith('{"device"'))!) as {
      channelId: string;
      paid: string;
      close: string;
    };
    expect(device).toMatchObject({ paid: '20000', close: 'cooperative' });
    expect(stdout).toMatch(/^dashboard without the token: 401$/m);
    expect(stdout).toMatch(/^a WebSocket upgrade at \/ws: 404$/m); // only / upgrades
    // the dashboard API lists the device's channel with what each side gets
    const page = JSON.parse(lines.find((l) => l.startsWith('{"total"'))!) as {
      total: number;
      rows: { channelId: string; balanceHub: string; depositDevice: string }[];
    };
    expect(page.total).toBe(1);
    expect(page.rows[0]).toMatchObject({ channelId: device.channelId, depositDevice: '20000000', balanceHub: '20000' });
    expect(stdout).toMatch(/^trickle_channels 1$/m);
    const accepted = /^trickle_updates_total\{outcome="accepted"\} (\d+)$/m.exec(stdout);
    expect(Number(accepted?.[1])).toBeGreaterThanOrEqual(20); // 20 payments (and the final state of the close)
    expect(stdout).toMatch(/^trickle_ack_seconds_count 20$/m);
    expect(stdout).toContain(`Channel ${device.channelId}`);
    expect(stdout).toMatch(/status\s+closed/);
  }, 180_000);
});
