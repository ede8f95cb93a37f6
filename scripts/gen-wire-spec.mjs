// Writes the field-kind table (§3) and the message table (§4) of protocol-spec/README.md from the wire schema
// (packages/protocol/src/wire-schema.ts), between the `<!-- wire:… -->` markers. Run after `tsc -b`:
// `node scripts/gen-wire-spec.mjs` (`--check` exits 1 when the README differs instead of writing it).
import { readFileSync, writeFileSync } from 'node:fs';
import { wireSpecMarkdown } from '@trickle/protocol/wire-schema';

const file = new URL('../protocol-spec/README.md', import.meta.url);
const before = readFileSync(file, 'utf8');
const tables = wireSpecMarkdown();
let after = before;
for (const [name, table] of Object.entries(tables)) {
  const re = new RegExp(`(<!-- wire:${name} -->\\n)[\\s\\S]*?(<!-- /wire:${name} -->)`);
  if (!re.test(after))
    throw new Error(`protocol-spec/README.md has no <!-- wire:${name} --> … <!-- /wire:${name} --> section`);
  after = after.replace(re, (_, open, close) => `${open}${table}${close}`);
}
if (process.argv.includes('--check')) {
  if (after !== before) {
    console.error(
      'protocol-spec/README.md: the wire tables differ from the schema; run node scripts/gen-wire-spec.mjs',
    );
    process.exit(1);
  }
} else if (after !== before) writeFileSync(file, after);
