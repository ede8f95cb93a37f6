// The device client bundled for a browser, as an app would bundle it: esbuild, `platform: 'browser'` (package.json
// `browser` conditions: @trickle/client's core entry, @trickle/protocol/native's stub), minified, ESM. Node built-ins
// are not resolved but recorded with the module that imports them, so a caller sees every offender at once.
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, transform } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

/**
 * Bundle `contents` (default: everything `@trickle/client` exports) for a browser.
 * @param o.contents - the entry module's source
 * @returns the bundle's code, its size minified and gzipped (level 9), the Node built-ins imported (with importer),
 *   and the largest inputs
 */
export async function bundleClient(o = {}) {
  const nodeImports = [];
  const r = await build({
    ...options(o.contents, nodeImports),
    minify: true,
  });
  const code = r.outputFiles[0].contents;
  const [output] = Object.values(r.metafile.outputs);
  const inputs = Object.entries(output.inputs)
    .map(([file, v]) => ({ file: shortName(file), bytes: v.bytesInOutput }))
    .sort((a, b) => b.bytes - a.bytes);
  return {
    code: new TextDecoder().decode(code),
    bytes: code.length,
    gzipBytes: gzip(code),
    nodeImports,
    inputs,
  };
}

/**
 * What each module costs in the gzipped bundle: the same bundle, cut at its module boundaries (esbuild marks them
 * when whitespace is kept), each part then minified on its own; a module's cost is how much smaller the gzipped
 * whole gets without it (gzip shares repeats between modules, so the costs add up to about the total, not exactly).
 * An estimate to find what takes the bytes; {@link bundleClient}'s figure is the one that counts.
 * @param o.contents - the entry module's source (default: everything `@trickle/client` exports)
 * @returns the gzipped size of the parts joined, and per module (largest cost first): minified bytes and gzip cost
 */
export async function analyzeClient(o = {}) {
  const r = await build({ ...options(o.contents, []), minifySyntax: true, minifyIdentifiers: true });
  // The bundle's own export list names bindings of every module: it is one part of its own, kept as it is.
  const text = r.outputFiles[0].text;
  const exportsAt = text.search(/^export \{/m);
  const parts = [];
  for (const part of text.slice(0, exportsAt).split(/^(?=\/\/ \S+\.[cm]?js$)/m)) {
    const file = /^\/\/ (\S+)$/m.exec(part)?.[1] ?? '(bundle)';
    const { code } = await transform(part, { minifyWhitespace: true, legalComments: 'none' });
    parts.push({ file: shortName(file), code });
  }
  parts.push({
    file: '(export list)',
    code: text
      .slice(exportsAt)
      .replace(/\s+/g, '')
      .replace(/\/\*.*$/s, ''),
  });
  const whole = gzip(parts.map((p) => p.code).join(''));
  const modules = parts
    .map((p, i) => ({
      file: p.file,
      bytes: p.code.length,
      gzipCost:
        whole -
        gzip(
          parts
            .filter((_, j) => j !== i)
            .map((q) => q.code)
            .join(''),
        ),
    }))
    .sort((a, b) => b.gzipCost - a.gzipCost);
  return { gzipBytes: whole, modules };
}

const gzip = (code) => gzipSync(code, { level: 9 }).length;
const shortName = (file) => file.replace(/^.*node_modules\//, '');

/** The build options both functions share: the entry, browser platform and conditions, Node built-ins recorded. */
function options(contents, nodeImports) {
  return {
    stdin: { contents: contents ?? "export * from '@trickle/client';", resolveDir: ROOT, sourcefile: 'entry.js' },
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
    plugins: [
      {
        name: 'record-node-builtins',
        setup(b) {
          b.onResolve({ filter: /.*/ }, (args) => {
            if (!BUILTINS.has(args.path)) return undefined;
            nodeImports.push({ module: args.path, importer: relative(ROOT, args.importer) });
            return { path: args.path, external: true };
          });
        },
      },
    ],
  };
}
