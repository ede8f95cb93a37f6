// The human-readable report of a bench result: one table, then how each figure was measured.

const n0 = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
const n2 = (x) =>
  typeof x === 'number' && Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: 2 }) : '–';
const mark = (t) => (t === undefined ? '' : t.pass ? `${t.target}  PASS` : `${t.target}  FAIL`);

/** @param r - the result object of bench/run.mjs */
export function renderTable(r) {
  const target = (name) => r.targets?.find((t) => t.name === name);
  const rows = [];
  const row = (figure, value, tgt = '', note = '') => rows.push([figure, value, tgt, note]);
  const section = (title) => rows.push([title]);

  section('crypto (one core)');
  if (r.crypto) {
    const runs = (k) =>
      r.crypto.runs.length > 1 ? `; runs ${r.crypto.runs.map((x) => n0(x[k])).join(' / ')}, faster kept` : '';
    row(
      'crypto.signPerSec',
      `${n0(r.crypto.signPerSec)}/s`,
      '',
      `native; noble ${n0(r.crypto.noble.signPerSec)}/s${runs('signPerSec')}`,
    );
    row(
      'crypto.verifyPerSec',
      `${n0(r.crypto.verifyPerSec)}/s`,
      '',
      `native recoverAddress; noble ${n0(r.crypto.noble.verifyPerSec)}/s${runs('verifyPerSec')}`,
    );
    if (r.crypto.nativeRaw)
      row(
        '  libsecp256k1 alone',
        `sign ${n0(r.crypto.nativeRaw.ecdsaSignPerSec)}/s`,
        '',
        `recover ${n0(r.crypto.nativeRaw.ecdsaRecoverPerSec)}/s, verify ${n0(r.crypto.nativeRaw.ecdsaVerifyPerSec)}/s`,
      );
    row(
      '  stateDigest (2 keccaks)',
      `${n0(r.crypto.stateDigestPerSec)}/s`,
      '',
      `update frame ${r.crypto.codec.updateFrameBytes} B: encode ${n0(r.crypto.codec.encodeUpdatePerSec)}/s, decode ${n0(r.crypto.codec.decodeUpdatePerSec)}/s`,
    );
  }
  section('hub (individually signed updates, no coalescing)');
  if (r.hub) {
    row(
      'hub.signedUpdatesPerSec',
      `${n0(r.hub.signedUpdatesPerSec)}/s`,
      '',
      'best of the device counts below; peers: Celer 4,000/s (one node), LND a few hundred/s',
    );
    for (const [devices, d] of Object.entries(r.hub.details)) {
      const folded = d.covered > d.acks ? `, ${n0(d.covered - d.acks)} folded` : '';
      row(
        `  ${n0(Number(devices))} device${devices === '1' ? '' : 's'}`,
        `${n0(d.signedUpdatesPerSec)}/s`,
        '',
        `CPU: hub ${n2(d.hub.cpuCores)} cores (${n0(d.cpuUsPerUpdate.hub)} µs/update), devices ${n2(d.workersCpuCores)} (${n0(d.cpuUsPerUpdate.devices)} µs), other ${n2(d.otherCpuCores)}; ${n0(d.hub.commitsPerSec)} commits/s × ${n2(d.hub.writesPerCommit)} writes (${n2(d.hub.commitMsAvg)} ms); ack RTT p50 ${n2(d.ackRttMs.p50)} ms, p99 ${n2(d.ackRttMs.p99)} ms${folded}`,
      );
    }
    if (r.hub.cryptoBoundPerSec) {
      const c = r.hub.cryptoPerUpdateUs;
      row(
        'hub.cryptoBoundPerSec',
        `${n0(r.hub.cryptoBoundPerSec)}/s`,
        '',
        `${r.machine.cores} cores / ${n2(c.total)} µs (2 signs ${n2(c.deviceSignUs * 2)} + 2 verifies ${n2(c.hubVerifyUs * 2)} + 2 digests ${n2(c.twoDigestsUs)})`,
      );
      row('hub.ratio', n2(r.hub.ratio), mark(target('hub.ratio')), 'signedUpdatesPerSec / cryptoBoundPerSec');
      const a = r.hub.analysis;
      if (a)
        row(
          '  CPU per update',
          `${n0(a.cpuUsPerUpdate.total)} µs`,
          '',
          `at ${n0(a.atDevices)} devices: hub ${n0(a.cpuUsPerUpdate.hub)} + devices ${n0(a.cpuUsPerUpdate.devices)} µs, of which crypto ${n0(a.cryptoUsPerUpdate)} µs (${n0(a.cryptoShareOfCpu * 100)}%); ${n2(a.busyCores)} of ${r.machine.cores} cores busy`,
        );
      const s = r.floor?.socket;
      if (s && r.hub.ratioCeiling)
        row(
          '  ceiling on WebSockets',
          n2(r.hub.ratioCeiling),
          '',
          `crypto ${n0(r.hub.cryptoPerUpdateUs.total)} µs / (crypto + ${n2(s.cpuUsPerRoundTrip)} µs of CPU per bare WebSocket round trip: ${n0(s.devices)} connections, window ${s.window}, ${n0(s.roundTripsPerSec)}/s)`,
        );
    }
  }
  section('stream (pay() through the client library, coalesced)');
  if (r.stream) {
    row(
      'stream.paymentsPerSec',
      `${n0(r.stream.paymentsPerSec)}/s`,
      mark(target('stream.paymentsPerSec')),
      `${n0(r.stream.peak.statesPerSec)} signed states/s, ${n2(r.stream.peak.paymentsPerState)} payments each; ${r.stream.peak.outstandingPerChannel} pending per channel; client ${n2(r.stream.peak.clientCpuCores)} cores, hub ${n2(r.stream.peak.hubCpuCores)}`,
    );
    const L = r.stream.latency;
    const m = L.runs?.find((x) => x.p99Ms === L.p99Ms) ?? L; // the median run
    const h = m.hub;
    row(
      'stream.p50Ms',
      `${n2(r.stream.p50Ms)} ms`,
      '',
      `median run: at ${n0(m.achievedPerSec)}/s (${(L.load ?? 0.5) === 0.5 ? 'half' : `${n0(L.load * 100)}%`} of ${n0(L.sustainedPerSec)}/s sustained with latency measured), ${n0(m.samples)} payments${m.clientCpuCores !== undefined ? `; client ${n2(m.clientCpuCores)} cores` : ''}${h ? `; hub meanwhile: ${n0(h.statesAcceptedPerSec)} states/s, ${n0(h.commitsPerSec)} commits/s of ${n2(h.commitMsAvg)} ms` : ''}`,
    );
    row(
      'stream.p99Ms',
      `${n2(r.stream.p99Ms)} ms`,
      mark(target('stream.p99Ms')),
      `median of ${L.p99RunsMs?.length ?? 1} runs (${(L.p99RunsMs ?? []).map(n2).join(' / ')} ms); median run p99.9 ${n2(m.p999Ms)} ms, max ${n2(m.maxMs)} ms${L.saturated ? '; generator saturated' : ''}`,
    );
    const pf = r.floor?.payment;
    if (pf)
      row(
        '  payment floor',
        `p99 ${n2(pf.p99Ms)} ms`,
        '',
        `stream.floorP99Ms: a loopback WebSocket round trip then one durable 4 KiB write, in series: p50 ${n2(pf.p50Ms)} ms, max ${n2(pf.maxMs)} ms over ${n0(pf.samples)}`,
      );
    const f = r.floor?.fsync;
    if (f)
      row(
        '  durable-write floor',
        `p99 ${n2(f.p99Ms)} ms`,
        '',
        `hub's write then device's, bare (4 KiB pwrite + fdatasync each, idle machine): p50 ${n2(f.p50Ms)} ms, max ${n2(f.maxMs)} ms over ${n0(f.pairs)} pairs`,
      );
    const u = f?.underLoad;
    if (u)
      row(
        '    under load',
        `p99 ${n2(u.p99Ms)} ms`,
        '',
        `the hub's write, bare, as the latency run makes them (${u.writers} channels, a state per ms each, group commits; the device's saves behind it on the same disk): p50 ${n2(u.p50Ms)} ms, max ${n2(u.maxMs)} ms over ${n0(u.pairs)} states`,
      );
    const q = u?.payments;
    const limit = r.targets?.find((t) => t.name === 'stream.p99Ms')?.limit;
    if (q)
      row(
        '    payments on bare disk',
        `p99 ${n2(q.p99Ms)} ms`,
        limit !== undefined && q.p99Ms > limit ? 'over target' : '',
        `the latency run with no CPU work, only those writes: p50 ${n2(q.p50Ms)} ms, p99.9 ${n2(q.p999Ms)} ms, max ${n2(q.maxMs)} ms; the lowest p99 this disk allows`,
      );
    const k = r.floor?.wakeup;
    if (k)
      row(
        '  CPU per wakeup',
        `${n2(k.timerTickCpuUs)} µs`,
        '',
        `a 1 ms timer tick of an idle event loop; a 1.2 KiB O_DSYNC write costs ${n2(k.dsyncWriteCpuUs.sync)} µs of CPU done synchronously, ${n2(k.dsyncWriteCpuUs.promises)} µs through fs/promises`,
      );
  }
  section('device (one TrickleClient process paying a hub, CPU per acked state)');
  if (r.device) {
    const d = r.device;
    if (d.cases)
      row(
        'device.cpuMsPerState',
        `${n2(d.cpuMsPerState)} ms`,
        mark(target('device.cpuMsPerState')),
        `highest case median (${d.worstCase}); ${Object.entries(d.cases)
          .map(
            ([c, x]) =>
              `${c} ${n2(x.cpuMsPerState)} ms at ${n0(x.statesPerSec)} states/s × ${n2(x.paymentsPerState)} payments`,
          )
          .join('; ')}`,
      );
    if (d.floor)
      row(
        '  floor: a bare device',
        `${n2(d.floor.bareStrict?.cpuMsPerState)} ms`,
        '',
        `raw WebSocket + codec + native crypto, no client library, one update per state: ${n2(d.floor.bareStrict?.cpuMsPerState)} ms closed loop at ${n0(d.floor.bareStrict?.statesPerSec)} states/s, ${n2(d.floor.bare500?.cpuMsPerState)} ms at one per 2 ms, ${n2(d.floor.bare10?.cpuMsPerState)} ms at one per 100 ms (same run, alternating)`,
      );
    if (d.cpuMsPerStateAtHalfLoad !== undefined)
      row(
        '  at half stream load',
        `${n2(d.cpuMsPerStateAtHalfLoad)} ms`,
        '',
        `stream client processes per acked state, ~${n0(d.paymentsPerStateAtHalfLoad)} payments each (${(d.cpuMsPerStateAtHalfLoadRuns ?? []).map(n2).join(' / ')}); ${n2(d.cpuUsPerPaymentAtHalfLoad)} µs per payment`,
      );
  }
  section('market');
  if (r.market) {
    row(
      'market.clear100kMs',
      `${n2(r.market.clear100kMs)} ms`,
      mark(target('market.clear100kMs')),
      `runs ${r.market.runsMs.join(', ')} ms; re-validating ${n2(r.market.clear100kRevalidatingMs)} ms`,
    );
    row(
      'market.updatesPerRound',
      n0(r.market.updatesPerRound),
      '',
      `vs tradesPerRound ${n0(r.market.tradesPerRound)}: one netted credit per participant, not one per trade`,
    );
  }
  section('client in a browser');
  if (r.clientBundle)
    row(
      'clientBundle.gzipBytes',
      `${n0(r.clientBundle.gzipBytes)} B`,
      mark(target('clientBundle.gzipBytes')),
      `${n0(r.clientBundle.bytes)} B minified; Node built-ins: ${r.clientBundle.nodeBuiltins?.length ? r.clientBundle.nodeBuiltins.join(', ') : 'none'}${r.clientBundle.withNobleSigner ? `; with nobleSigner ${n0(r.clientBundle.withNobleSigner.gzipBytes)} B gzipped` : ''}${r.clientBundle.withMarket ? `; with the market (opt-in) ${n0(r.clientBundle.withMarket.gzipBytes)} B gzipped` : ''}`,
    );
  section('fairness under a flood');
  if (r.fairness) {
    const fl = r.fairness.flooder?.[0];
    row(
      'fairness.p99RatioUnderFlood',
      n2(r.fairness.p99RatioUnderFlood),
      mark(target('fairness.p99RatioUnderFlood')),
      `other devices' p99 ${n2(r.fairness.p99AloneMs ?? r.fairness.alone.p99Ms)} ms alone, ${n2(r.fairness.p99UnderFloodMs ?? r.fairness.underFlood.p99Ms)} ms under flood, over ${(r.fairness.p99RatioRuns ?? []).length} alternating pairs (per pair ${(r.fairness.p99RatioRuns ?? []).map(n2).join(' / ')}); hub ${(r.fairness.alone.hubCores ?? []).map(n2).join('/')} → ${(r.fairness.underFlood.hubCores ?? []).map(n2).join('/')} cores${fl ? `; flooder sent ${n0(fl.sent)} frames, ${n0(fl.replies)} answered` : ''}`,
    );
  }
  section("cluster on PostgreSQL (processes share this machine's cores)");
  if (r.cluster) {
    const u = r.cluster.updatesPerSec;
    row(
      'cluster.updatesPerSec',
      `pg1 ${n0(u.pg1)}/s`,
      '',
      `lmdb1 ${n0(u.lmdb1)}, pg2 ${n0(u.pg2)}, pg3 ${n0(u.pg3)} signed updates/s (${n0(r.cluster.devices)} devices)`,
    );
    row(
      'cluster.pg1OverLmdb1',
      n2(r.cluster.ratios.pg1OverLmdb1),
      mark(target('cluster.pg1OverLmdb1')),
      'one process: PostgreSQL store with leases vs the LMDB store',
    );
    row(
      'cluster.pg3OverPg1',
      n2(r.cluster.ratios.pg3OverPg1),
      mark(target('cluster.pg3OverPg1')),
      'three processes vs one, same devices, same cores',
    );
    row(
      'cluster.failoverMs',
      `${n0(r.cluster.failoverMs)} ms`,
      mark(target('cluster.failoverMs')),
      `SIGKILL to the first acked payment on the new owner; lease ${n0(r.cluster.leaseMs)} ms`,
    );
  }
  section('x402 over channels (vs exact-style on-chain settlement, a block every 2 s)');
  if (r.x402) {
    const x = r.x402;
    row(
      'x402.paidRequestsPerSec',
      `${n0(x.paidRequestsPerSec)}/s`,
      '',
      `unpaid ${n0(x.unpaidRequestsPerSec)}/s (ratio ${n2(x.paidOverUnpaid)}); payment adds ${n2(x.addedP99Ms)} ms at p99`,
    );
    row('x402.channelP50Ms', `${n2(x.channelP50Ms)} ms`, '', `exact-style ${n0(x.exactP50Ms)} ms`);
    row(
      'x402.channelGasPerRequest',
      n2(x.channelGasPerRequest),
      '',
      `exact-style ${n0(x.exactGasPerRequest)} gas per request`,
    );
  }
  if (r.streams)
    row(
      'streams.concurrent',
      n0(r.streams.concurrent),
      '',
      'payment streams at a 100 ms tick with every tick acked before the next',
    );
  section('memory');
  if (r.memory) {
    row(
      'memory.bytesPerChannel',
      `${n0(r.memory.bytesPerChannel)} B`,
      mark(target('memory.bytesPerChannel')),
      `records ${n0(r.memory.recordBytesPerChannel)} B + channel table ${n0(r.memory.tableOverheadBytesPerChannel)} B, at ${n0(r.memory.channels)} channels`,
    );
  }
  section('gas (ETH / ERC20)');
  if (r.gas) {
    for (const [op, v] of Object.entries(r.gas)) {
      if (typeof v !== 'object' || !v || !('eth' in v || 'usdt' in v)) continue;
      row(`  ${op}`, `${n0(v.eth)} / ${n0(v.usdt)}`);
    }
  }

  const profile = [];
  if (r.hubProfile) {
    profile.push('', `CPU profiles (${r.hubProfile.note}; stream client: whole process):`);
    for (const t of r.hubProfile.threads) {
      profile.push(
        `  ${t.thread.startsWith('stream') || t.thread.startsWith('hub-phase') ? t.thread : `hub ${t.thread} thread`}, ${n0(t.busyMs)} ms busy (${t.file}):`,
      );
      profile.push(
        `    by area: ${t.areas
          .slice(0, 6)
          .map((a) => `${a.area} ${a.pctOfBusy}%`)
          .join('; ')}`,
      );
      profile.push(
        `    top functions: ${t.functions
          .slice(0, 8)
          .map((f) => `${f.fn} ${f.pctOfBusy}%`)
          .join('; ')}`,
      );
    }
  }
  const widths = [0, 1, 2].map((i) => Math.max(...rows.filter((x) => x.length > 1).map((x) => x[i].length)));
  const lines = rows.map((x) =>
    x.length === 1
      ? `\n${x[0]}`
      : `  ${x[0].padEnd(widths[0])}  ${x[1].padStart(widths[1])}  ${x[2].padEnd(widths[2])}  ${x[3]}`.trimEnd(),
  );
  const m = r.machine;
  const head = [
    `Trickle benchmark  ${r.startedAt}`,
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}; load average ${m.loadavg1AtStart} at start, ${m.loadavg1AtEnd} at end`,
  ];
  const busy = r.hub && Object.values(r.hub.details).some((d) => d.otherCpuCores > 0.25);
  if (busy)
    head.push(
      'warning: processes outside the benchmark used CPU during the hub phase (see "other" below): its figures are lower than on an idle machine',
    );
  const runs = r.crypto?.runs ?? [];
  if (
    runs.length > 1 &&
    Math.min(...runs.map((x) => x.signPerSec)) < 0.85 * Math.max(...runs.map((x) => x.signPerSec))
  ) {
    head.push(
      'note: the two crypto measurements differ by more than 15% (a shared machine); the faster is used for the crypto bound',
    );
  }
  const how = [];
  // Every phase's result says how it was measured, in the order the phases ran (the locks phase included).
  for (const [k, v] of Object.entries(r)) if (typeof v?.method === 'string') how.push(`  ${k}: ${v.method}`);
  for (const k of ['socket', 'fsync', 'payment', 'wakeup'])
    if (typeof r.floor?.[k]?.method === 'string') how.push(`  floor (${k}): ${r.floor[k].method}`);
  if (typeof r.floor?.fsync?.underLoad?.method === 'string')
    how.push(`  floor (fsync under load): ${r.floor.fsync.underLoad.method}`);
  const errors = r.errors.map((e) => `  ${e.phase}: ${e.message.split('\n')[0]}`);
  return [
    ...head,
    ...lines,
    '',
    'How each figure was measured:',
    ...how,
    ...profile,
    '',
    `Published peers for context (not measured here): ${r.peers.map((p) => `${p.name} ${typeof p.paymentsPerSec === 'number' ? `${n0(p.paymentsPerSec)}` : p.paymentsPerSec} payments/s (${p.note})`).join('; ')}.`,
    ...(errors.length ? ['', 'Phases that FAILED:', ...errors] : []),
    `\n(${r.durationSec} s; JSON in bench/results/latest.json, or npm run bench -- --json)`,
    '',
  ].join('\n');
}
