#!/usr/bin/env -S node --max-semi-space-size=2
// The `trickle-hub` bin. A checked-in shim: npm links bins at install time and skips files that do not exist yet,
// so the bin must not point into dist/ (built after `npm ci`). The program is dist/bin.js. The node flags: HUB_NODE_ARGS
// in src/spawn.ts (why they are what they are).
import '../dist/bin.js';
