import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, TrickleError, isTrickleError } from './errors.js';

const spec = readFileSync(new URL('../../../protocol-spec/README.md', import.meta.url), 'utf8');
/** The backquoted codes of a part of protocol-spec §6, from `from` up to `to`. */
function codesOf(from: string, to: string): string[] {
  const section = spec.slice(spec.indexOf('## 6. Error codes'), spec.indexOf('## 7.'));
  const part = section.slice(section.indexOf(from), section.indexOf(to));
  return [...part.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!).filter((c) => c !== 'ERROR_CODES');
}

describe('error codes are the ones protocol-spec §6 lists, under their own names', () => {
  it('every code of ERROR_CODES is in §6 and every code of §6 in ERROR_CODES, once', () => {
    const listed = codesOf('`MALFORMED`', 'WebSocket close codes');
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed].sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });
  it('each code is its own name (stable: a rename shows here)', () => {
    for (const [name, code] of Object.entries(ERROR_CODES)) expect(code).toBe(name);
  });
  it('a TrickleError carries the code it was made with', () => {
    for (const code of Object.keys(ERROR_CODES) as (keyof typeof ERROR_CODES)[])
      expect(isTrickleError(new TrickleError(code, 'x'), code)).toBe(true);
  });
});
