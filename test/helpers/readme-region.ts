import { readFileSync } from 'node:fs';

/**
 * The ```ts blocks of packages/client/README.md, and the region `name` of a test file (between `// #region name` and
 * `// #endregion name`) with its first `indent` spaces taken off each line: a test shows a README block is code it
 * runs by expecting the blocks to contain the region.
 */
export function readmeRegion(testFile: string, name: string, indent: number): { region: string; blocks: string[] } {
  const source = readFileSync(new URL(testFile), 'utf8');
  const open = `// #region ${name}\n`;
  const start = source.indexOf(open) + open.length;
  const region = source.slice(start, source.lastIndexOf('\n', source.indexOf(`// #endregion ${name}`)) + 1);
  const readme = readFileSync(new URL('../../packages/client/README.md', import.meta.url), 'utf8');
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  return { region: region.replace(new RegExp(`^ {${indent}}`, 'gm'), ''), blocks };
}
