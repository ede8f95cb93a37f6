#!/usr/bin/env node
// Size of the device client bundled for a browser (esbuild, minified, gzipped; no chain part, no file store).
//   node bench/bundle.mjs          a few lines on stdout
//   node bench/bundle.mjs --json   one JSON object (bench/run.mjs reports it as clientBundle)
//   node bench/bundle.mjs --analyze   what takes the bytes: every module, minified bytes and its cost in the gzipped
//                                      bundle (an estimate: see analyzeClient); with --json, as `modules`
import { analyzeClient, bundleClient } from './lib/bundle.mjs';

const b = await bundleClient();
// Beside it, what an app that signs with the package's own pure-JS signer ships: the client bundle holds no signing
// code (the client signs with the Signer its app gives it), and nobleSigner brings noble's sign with SHA-256/HMAC.
const s = await bundleClient({
  contents: "export * from '@trickle/client'; export { nobleSigner } from '@trickle/protocol/signer';",
});
// And what an app that trades in the hub's market ships: the market is opt-in in a browser (connect's `market`
// option, MarketSession from '@trickle/client/market'), made by default under Node.
const m = await bundleClient({
  contents: "export * from '@trickle/client'; export { MarketSession } from '@trickle/client/market';",
});
const result = {
  bytes: b.bytes,
  gzipBytes: b.gzipBytes,
  withNobleSigner: { bytes: s.bytes, gzipBytes: s.gzipBytes },
  withMarket: { bytes: m.bytes, gzipBytes: m.gzipBytes },
  nodeBuiltins: b.nodeImports.map((i) => `${i.module} (${i.importer})`),
  largestInputs: b.inputs.slice(0, 8),
  method:
    "esbuild (platform browser, ESM, minified, es2022) of `export * from '@trickle/client'` (its browser entry: no file store, no chain helper, the market opt-in), gzip level 9; withMarket: with MarketSession from '@trickle/client/market', as a trading device ships it",
};
const analysis = process.argv.includes('--analyze') ? await analyzeClient() : undefined;
if (analysis) result.modules = analysis.modules;
if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  process.stdout.write(
    `client bundle: ${b.bytes.toLocaleString('en-US')} B minified, ${b.gzipBytes.toLocaleString('en-US')} B gzipped\n`,
  );
  process.stdout.write(
    `with nobleSigner: ${s.bytes.toLocaleString('en-US')} B minified, ${s.gzipBytes.toLocaleString('en-US')} B gzipped\n`,
  );
  process.stdout.write(
    `with the market: ${m.bytes.toLocaleString('en-US')} B minified, ${m.gzipBytes.toLocaleString('en-US')} B gzipped\n`,
  );
  for (const i of result.largestInputs) process.stdout.write(`  ${String(i.bytes).padStart(7)} B  ${i.file}\n`);
  if (b.nodeImports.length) process.stdout.write(`Node built-ins imported: ${result.nodeBuiltins.join(', ')}\n`);
  if (analysis) {
    process.stdout.write(
      `\nper module (cut at module boundaries: ${analysis.gzipBytes.toLocaleString('en-US')} B gzipped in all)\n` +
        `  gzip cost   minified  module\n`,
    );
    for (const m of analysis.modules)
      process.stdout.write(`  ${String(m.gzipCost).padStart(9)}  ${String(m.bytes).padStart(9)}  ${m.file}\n`);
  }
}
