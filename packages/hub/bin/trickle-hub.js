#!/usr/bin/env node
// The `trickle-hub` bin. A checked-in shim: npm links bins at install time and skips files that do not exist yet,
// so the bin must not point into dist/ (built after `npm ci`). The program is dist/bin.js.
import '../dist/bin.js';
