import { readFileSync } from 'node:fs';

/**
 * The codes the `claim` row of protocol-spec/README.md's message table (§4) lists for a claim's `reject`: tests check
 * that a code the hub answered a claim with is one of them (the row is generated from the wire schema).
 */
export function specClaimRejectCodes(): Set<string> {
  const readme = readFileSync(new URL('../../protocol-spec/README.md', import.meta.url), 'utf8');
  const row = readme.split('\n').find((l) => l.startsWith('| `claim` |'));
  if (!row) throw new Error('protocol-spec/README.md has no `claim` row in its message table');
  return new Set([...row.matchAll(/`([A-Z][A-Z_]+)`/g)].map((m) => m[1]!));
}
