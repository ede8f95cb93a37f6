import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get, request } from 'node:https';
import { join } from 'node:path';
import { isTrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';

/** A self-signed certificate for 127.0.0.1 and localhost, made by openssl for this run. */
function selfSigned(dir: string): { cert: string; key: string } {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
}

function httpsGet(url: string, ca?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { ca }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** The hub serves wss:// and https:// with a certificate; the device client trusts it through the `ca` option. */
describe('hub over TLS', () => {
  let w: World;
  let tls: { cert: string; key: string };
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    tls = selfSigned(w.dir);
    await w.startHub({ more: { tls, dashboard: { token: 'dashboard-token-over-tls' } } });
  });
  afterAll(async () => w?.close());

  it('serves wss:// and https://, and a device that trusts the CA pays over it', async () => {
    const hub = w.hub!;
    expect(hub.url).toBe(`wss://127.0.0.1:${hub.port}/`);
    expect(hub.httpUrl).toBe(`https://127.0.0.1:${hub.port}/`);
    const health = await httpsGet(`${hub.httpUrl}health`, tls.cert);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: 'ok', hub: hub.address });

    const c = await w.client(2, { ca: tls.cert });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1_234n);
    expect(hub.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(1_234n);
  });

  it('the dashboard login cookie is Secure over TLS', async () => {
    const cookie = await new Promise<string>((resolve, reject) => {
      const req = request(
        `${w.hub!.httpUrl}dashboard/login`,
        { method: 'POST', ca: tls.cert, headers: { 'content-type': 'application/x-www-form-urlencoded' } },
        (res) => {
          res.resume();
          resolve(String(res.headers['set-cookie']));
        },
      );
      req.on('error', reject);
      req.end('token=dashboard-token-over-tls');
    });
    expect(cookie).toMatch(/HttpOnly; SameSite=Strict; Path=\/; Max-Age=\d+; Secure/);
  });

  it('a device that does not trust the certificate is refused, with the TLS cause in the error', async () => {
    const err = await w
      .client(3, { connectTimeoutMs: 2_000, reconnect: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10 } })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isTrickleError(err, 'DISCONNECTED')).toBe(true);
    expect(JSON.stringify((err as { details: unknown }).details)).toMatch(/SELF_SIGNED|CERT/);
    // Plain https without the CA is refused as well: no silent fallback to an unverified connection.
    await expect(httpsGet(`${w.hub!.httpUrl}health`)).rejects.toThrow(/self[- ]signed/i);
  });
});
