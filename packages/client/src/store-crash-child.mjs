// Child process of store.test.ts ("a SIGKILL at any point ..."): saves versions start, start+1, … of one channel
// with the BUILT store (`@trickle/client/store`, i.e. dist/: run `tsc -b` first) and prints each version on stdout
// once its save has resolved. Bounded in count and time; the test kills it long before either bound.
// Usage: node store-crash-child.mjs <dir> <start> <count> <ms>
import { fileChannelStore } from '@trickle/client/store';
import { sampleRecord } from '../../../test/helpers/store-fixture.mjs';

const [dir, startArg, countArg, msArg] = process.argv.slice(2);
const start = BigInt(startArg ?? '1');
const count = Number(countArg ?? '2000');
const deadline = Date.now() + Number(msArg ?? '20000');
const rec = sampleRecord;

const store = fileChannelStore(dir);
for (let v = start; v < start + BigInt(count) && Date.now() < deadline; v++) {
  await store.save(rec(v));
  process.stdout.write(`${v}\n`); // a pipe: written synchronously on Linux
}
await store.close();
