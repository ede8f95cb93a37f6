#!/usr/bin/env node
// The `trickle-chain` bin (a local chain as a JSON-RPC server). A checked-in shim, as npm links bins at install
// time, before dist/ is built. The program is dist/bin/trickle-chain.js.
import '../dist/bin/trickle-chain.js';
