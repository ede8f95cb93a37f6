import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';

/** A chain for tests that start `trickle-hub` bins: its server, the adjudicator, a temp dir and the hub's key file. */
export interface HubKeyChain {
  readonly server: ChainServer;
  /** The adjudicator, deployed by account 0. */
  readonly adjudicator: string;
  /** A fresh temporary directory (stores, key and token files). */
  readonly dir: string;
  /** Account 1's private key in `dir/hub.key`, mode 0600. */
  readonly hubKey: string;
}

/** Starts a chain server (3 accounts), deploys the adjudicator and writes the hub's key file in a new `prefix` dir. */
export async function hubKeyChain(prefix: string): Promise<HubKeyChain> {
  const server = await startChainServer({ accounts: 3 });
  const adjudicator = (await deployAdjudicator(server.wallet(0))).address;
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const hubKey = join(dir, 'hub.key');
  writeFileSync(hubKey, `${server.accounts[1]}\n`, { mode: 0o600 });
  return { server, adjudicator, dir, hubKey };
}

/** Stops what {@link hubKeyChain} started (either part may be missing: a setup that failed half way). */
export async function closeHubKeyChain(c: { server?: ChainServer; dir?: string }): Promise<void> {
  await c.server?.stop();
  if (c.dir) rmSync(c.dir, { recursive: true, force: true });
}
