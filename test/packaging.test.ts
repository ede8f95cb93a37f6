/**
 * What a user installs (test/exports.test.ts checks that every `exports` entry is a built file): every root entry
 * imports, each package declares every package its code loads,
 * its tarball carries README and LICENSE but no source maps or build info, and nothing a device, hub or CLI
 * installs depends on Hardhat (the local chain lives in the dev-only @trickle/devchain).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Every workspace package (`packages/<name>`), from the root package.json. */
const PACKAGES = (
  JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { workspaces: string[] }
).workspaces.map((w) => w.replace(/^packages\//, ''));
/** Packages installed in production: none of them may pull the development chain. */
const RUNTIME = PACKAGES.filter((p) => p !== 'devchain');

type ExportTarget = string | { [condition: string]: ExportTarget };

interface PackageJson {
  name: string;
  exports?: Record<string, ExportTarget>;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

const pkgDir = (p: string): string => join(ROOT, 'packages', p);
const readPkg = (dir: string): PackageJson =>
  JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;

/** Node's lookup: `<dir>/node_modules/<name>`, then the same from each parent folder. */
function findInstalled(fromDir: string, name: string): string | undefined {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** Every package installed for `dir`'s runtime dependencies (dependencies and optional ones), transitively. */
function runtimeClosure(dir: string): Map<string, string> {
  const seen = new Map<string, string>();
  const queue = [dir];
  while (queue.length > 0) {
    const at = queue.pop()!;
    const pkg = readPkg(at);
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      const found = findInstalled(at, name);
      if (found === undefined) {
        if (pkg.optionalDependencies?.[name] !== undefined) continue; // optional and not installed here
        throw new Error(`${pkg.name} depends on ${name}, which is not installed`);
      }
      if (seen.has(found)) continue;
      seen.set(found, name);
      queue.push(found);
    }
  }
  return seen;
}

function sourceFiles(dir: string): string[] {
  return (
    readdirSync(dir, { recursive: true, encoding: 'utf8' })
      // Tests and their fixtures (`*.fixture.ts`) are not built (tsconfig excludes them): not part of what a package ships.
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.endsWith('.fixture.ts') && !f.endsWith('.d.ts'))
      .map((f) => join(dir, f))
  );
}

/** Bare specifiers a package's source imports, requires or resolves (package names only, no `node:` built-ins). */
function loadedPackages(dir: string): Set<string> {
  const names = new Set<string>();
  const pattern = /(?:from |import\(|require\(|resolve\()\s*'([^'.][^']*)'/g;
  for (const file of sourceFiles(join(dir, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(pattern)) {
      const spec = m[1]!;
      if (spec.startsWith('node:')) continue;
      names.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  return names;
}

describe('package entry points', () => {
  it('the list covers the packages this test was written for', () => {
    expect(PACKAGES).toEqual(
      expect.arrayContaining(['protocol', 'market', 'chain', 'devchain', 'client', 'hub', 'cli']),
    );
  });

  it.each(PACKAGES.filter((p) => readPkg(pkgDir(p)).exports?.['.'] !== undefined))(
    '@trickle/%s has a root entry that imports',
    async (p) => {
      const mod = (await import(`@trickle/${p}`)) as Record<string, unknown>;
      expect(Object.keys(mod).length).toBeGreaterThan(0);
    },
  );
});

describe('declared dependencies', () => {
  // keccak's add-on is loaded through its own node-gyp-build, resolved from keccak's folder.
  const LOADED_THROUGH_ANOTHER = new Set(['node-gyp-build']);

  it.each(PACKAGES)('@trickle/%s declares every package its code loads', (p) => {
    const pkg = readPkg(pkgDir(p));
    const declared = new Set(
      Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies, ...pkg.peerDependencies }),
    );
    const missing = [...loadedPackages(pkgDir(p))].filter(
      (n) => !declared.has(n) && !LOADED_THROUGH_ANOTHER.has(n) && n !== pkg.name,
    );
    expect(missing).toEqual([]);
  });

  it('the native signer and keccak are optional dependencies of the package that loads them', () => {
    const protocol = readPkg(pkgDir('protocol'));
    expect(Object.keys(protocol.optionalDependencies ?? {}).sort()).toEqual(['keccak', 'secp256k1']);
    for (const p of PACKAGES) expect(readPkg(pkgDir(p)).dependencies?.secp256k1, p).toBeUndefined();
  });
});

describe('no Hardhat at run time', () => {
  it.each(RUNTIME)('@trickle/%s: the installed dependency closure has no hardhat, EDR or devchain', (p) => {
    const names = [...runtimeClosure(pkgDir(p)).values()];
    expect(names.length).toBeGreaterThan(0);
    expect(
      names.filter((n) => n === 'hardhat' || n.startsWith('@nomicfoundation/') || n === '@trickle/devchain'),
    ).toEqual([]);
  });

  it('@trickle/devchain is where Hardhat is (the check above can see it)', () => {
    expect([...runtimeClosure(pkgDir('devchain')).values()]).toContain('hardhat');
  });
});

describe('tarballs', () => {
  it('carry README and LICENSE, and no source maps, build info or tests', () => {
    const out = execFileSync(
      'npm',
      ['pack', '--dry-run', '--json', '--ignore-scripts', ...PACKAGES.flatMap((p) => ['-w', `packages/${p}`])],
      {
        cwd: ROOT,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    const packs = JSON.parse(out) as { name: string; files: { path: string }[] }[];
    expect(packs.map((p) => p.name).sort()).toEqual(PACKAGES.map((p) => `@trickle/${p}`).sort());
    for (const pack of packs) {
      const files = pack.files.map((f) => f.path);
      expect(files, pack.name).toContain('README.md');
      expect(files, pack.name).toContain('LICENSE');
      expect(
        files.filter((f) => /\.map$|tsbuildinfo|\.test\.|(^|\/)src\//.test(f)),
        pack.name,
      ).toEqual([]);
      expect(
        files.some((f) => f.startsWith('dist/') && f.endsWith('.js')),
        pack.name,
      ).toBe(true);
    }
  });

  it('carry every bin the packages declare, and the built program each shim imports', () => {
    for (const p of PACKAGES) {
      const bin = (readPkg(pkgDir(p)) as { bin?: Record<string, string> }).bin ?? {};
      for (const path of Object.values(bin)) {
        const shim = join(pkgDir(p), path);
        expect(statSync(shim).isFile(), `${p} ${path}`).toBe(true);
        const target = /import '(\.\.\/dist\/[^']+)'/.exec(readFileSync(shim, 'utf8'))?.[1];
        expect(target, `${p} ${path} imports its program from dist/`).toBeDefined();
        expect(existsSync(join(dirname(shim), target!)), `${p} ${target}`).toBe(true);
      }
    }
  });
});
