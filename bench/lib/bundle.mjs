// The device client bundled for a browser, as an app would bundle it: esbuild, `platform: 'browser'` (package.json
// `browser` conditions: @trickle/client's core entry, @trickle/protocol/native's stub), minified, ESM. Node built-ins
// are not resolved but recorded with the module that imports them, so a caller sees every offender at once.
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

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
    stdin: { contents: o.contents ?? "export * from '@trickle/client';", resolveDir: ROOT, sourcefile: 'entry.js' },
    bundle: true,
    minify: true,
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
  });
  const code = r.outputFiles[0].contents;
  const [output] = Object.values(r.metafile.outputs);
  const inputs = Object.entries(output.inputs)
    .map(([file, v]) => ({ file: file.replace(/^.*node_modules\//, ''), bytes: v.bytesInOutput }))
    .sort((a, b) => b.bytes - a.bytes);
  return {
    code: new TextDecoder().decode(code),
    bytes: code.length,
    gzipBytes: gzipSync(code, { level: 9 }).length,
    nodeImports,
    inputs,
  };
}
