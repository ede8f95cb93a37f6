#!/usr/bin/env node
// Bundle the dashboard page (dashboard-ui/app.js with uPlot and the styles) into dist/dashboard/assets/app.js and
// app.css with esbuild: the hub serves these files itself, so the page loads nothing from any other origin.
// Run by the root `npm run build` (after tsc -b).
import { mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/dashboard/assets`;
mkdirSync(outdir, { recursive: true });
await build({
  entryPoints: { app: `${root}dashboard-ui/app.js` },
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  legalComments: 'eof',
  outdir,
  logLevel: 'warning',
});
const kb = (f) => (statSync(`${outdir}/${f}`).size / 1024).toFixed(1);
process.stderr.write(`dashboard bundle: app.js ${kb('app.js')} KiB, app.css ${kb('app.css')} KiB\n`);
