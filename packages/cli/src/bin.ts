#!/usr/bin/env node
// trickle: dispute tooling and watchtower. Flags override environment variables (TRICKLE_*). Exit codes: see --help.
import { main } from './program.js';

const write = (stream: NodeJS.WriteStream) => (s: string) => void stream.write(s);
process.exitCode = await main(process.argv.slice(2), { out: write(process.stdout), err: write(process.stderr) });
