/**
 * The public surface is a decision: every package lists its entry points (no `"./*"`), every listed entry is a file
 * `tsc -b` built, and every `@trickle/<pkg>/<subpath>` the repository imports (sources, tests, benches, examples,
 * scripts, docs) is one of them — a new import of an unlisted module fails here, so widening the API is an edit of
 * `exports` (and of the API report, `npm run api:update`) that shows in review. Builds nothing: run after `tsc -b`.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
type Conditions = string | { readonly [condition: string]: Conditions };
interface Pkg {
  readonly name: string;
  readonly exports?: Record<string, Conditions>;
}
const packages = readdirSync(join(root, 'packages'))
  .filter((d) => existsSync(join(root, 'packages', d, 'package.json')))
  .map((d) => ({
    dir: join(root, 'packages', d),
    pkg: JSON.parse(readFileSync(join(root, 'packages', d, 'package.json'), 'utf8')) as Pkg,
  }));

const targets = (c: Conditions): string[] => (typeof c === 'string' ? [c] : Object.values(c).flatMap(targets));

/** Every `@trickle/…` module specifier in the repository's own files. */
function specifiers(): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === 'dist' || e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|mts|mjs|js|md)$/.test(e.name)) {
        const text = readFileSync(p, 'utf8');
        for (const m of text.matchAll(
          /(?:from\s*|import\s*\(\s*|import\s+|require\s*\(\s*)['"](@trickle\/[a-z0-9-]+(?:\/[A-Za-z0-9/_.-]+)?)['"]/g,
        )) {
          if (!found.has(m[1]!)) found.set(m[1]!, p.slice(root.length));
        }
      }
    }
  };
  walk(root);
  return found;
}

describe('package exports', () => {
  it('every package lists its entry points explicitly, with no wildcard', () => {
    for (const { pkg } of packages) {
      expect(pkg.exports, `${pkg.name} has an exports map`).toBeDefined();
      for (const [key, c] of Object.entries(pkg.exports!)) {
        expect(key, `${pkg.name} exports key`).not.toContain('*');
        for (const t of targets(c)) expect(t, `${pkg.name} ${key}`).not.toContain('*');
      }
    }
  });

  it('every listed entry resolves to a built file', () => {
    for (const { dir, pkg } of packages) {
      for (const [key, c] of Object.entries(pkg.exports ?? {})) {
        for (const t of targets(c))
          expect(existsSync(join(dir, t)), `${pkg.name} exports ${key} → ${t} (run tsc -b)`).toBe(true);
      }
    }
  });

  it('every @trickle/… module the repository imports is a listed entry', () => {
    const byName = new Map(packages.map(({ pkg }) => [pkg.name, pkg]));
    const missing: string[] = [];
    for (const [spec, file] of specifiers()) {
      const name = spec.split('/').slice(0, 2).join('/');
      const sub = `.${spec.slice(name.length)}`;
      const pkg = byName.get(name);
      if (pkg === undefined) missing.push(`${spec} (no such package; imported by ${file})`);
      else if (!Object.hasOwn(pkg.exports ?? {}, sub))
        missing.push(`${spec} (not in ${name}'s exports; imported by ${file})`);
    }
    expect(missing).toEqual([]);
  });
});
