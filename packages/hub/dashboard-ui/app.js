// The hub dashboard's page script. Bundled with uPlot by scripts/build-dashboard.mjs into dist/dashboard/assets;
// it talks only to the hub that served it (same origin, cookie auth): no CDN, no other network.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';

const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};

const short = (hex) => (hex && hex.length > 14 ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : (hex ?? '—'));
const fmt = (n) =>
  n === null || n === undefined
    ? '—'
    : typeof n === 'number'
      ? Number.isInteger(n)
        ? n.toLocaleString('en')
        : n.toFixed(2)
      : n;
/** Decimal strings of base units, grouped for reading; exact (no float). */
const amount = (s) => (s === null || s === undefined ? '—' : String(s).replace(/\B(?=(\d{3})+(?!\d))/g, ','));
const ago = (ms) => {
  if (!ms) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : `${Math.floor(s / 3600)}h ago`;
};

async function api(path) {
  const res = await fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (res.status === 401) {
    location.href = '/dashboard';
    throw new Error('signed out');
  }
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

const state = { sort: 'lastActivity', order: 'desc', page: 1, pageSize: 25, q: '' };
const COLUMNS = [
  ['channelId', 'Channel'],
  ['device', 'Device'],
  ['token', 'Token'],
  ['depositDevice', 'Deposit (device)'],
  ['depositHub', 'Deposit (hub)'],
  ['balanceDevice', 'Balance (device)'],
  ['balanceHub', 'Balance (hub)'],
  ['version', 'Version'],
  ['status', 'Status'],
  ['lastActivity', 'Last activity'],
];

const app = document.getElementById('app');
const tiles = {};
const tile = (id, label) => {
  const value = el('div', { class: 'value', 'data-testid': id }, '—');
  tiles[id] = value;
  return el('div', { class: 'tile' }, el('div', { class: 'label' }, label), value);
};
const header = el(
  'header',
  {},
  el('h1', {}, 'Trickle hub'),
  el('span', { class: 'hub', 'data-testid': 'hub' }, ''),
  el('form', { method: 'post', action: '/dashboard/logout' }, el('button', { type: 'submit' }, 'Sign out')),
);
const live = el('span', { class: 'live', 'data-testid': 'live' }, 'connecting…');
const kpis = el(
  'section',
  { class: 'tiles' },
  tile('updates-per-second', 'Updates / s'),
  tile('total-updates', 'Updates accepted'),
  tile('ack-p50', 'Ack p50 (ms)'),
  tile('ack-p99', 'Ack p99 (ms)'),
  tile('commit-p99', 'Commit p99 (ms)'),
  tile('channels-open', 'Channels open'),
  tile('connections', 'Devices online'),
  tile('liquidity', 'Liquidity spent / budget'),
);
const chartsBox = el('section', { class: 'charts' });
const search = el('input', {
  type: 'search',
  placeholder: 'filter by channel, device or token',
  'data-testid': 'filter',
});
const pager = el('div', { class: 'pager' });
const table = el('table', { 'data-testid': 'channels' });
const roundsBody = el('tbody', { 'data-testid': 'rounds' });
const eventsBody = el('tbody', { 'data-testid': 'chain-events' });
app.append(
  header,
  live,
  kpis,
  chartsBox,
  el('section', {}, el('h2', {}, 'Channels'), search, table, pager),
  el(
    'section',
    { class: 'two' },
    el(
      'div',
      {},
      el('h2', {}, 'Market rounds'),
      el(
        'table',
        {},
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            el('th', {}, 'Round'),
            el('th', {}, 'Market'),
            el('th', {}, 'Clearing price'),
            el('th', {}, 'Quantity'),
          ),
        ),
        roundsBody,
      ),
    ),
    el(
      'div',
      {},
      el('h2', {}, 'Disputes and deposits'),
      el(
        'table',
        {},
        el(
          'thead',
          {},
          el('tr', {}, el('th', {}, 'When'), el('th', {}, 'Event'), el('th', {}, 'Channel'), el('th', {}, 'Detail')),
        ),
        eventsBody,
      ),
    ),
  ),
);

// Charts: last 5 minutes, one point per second.
const series = { t: [], updates: [], ackP50: [], ackP99: [], commitP99: [] };
const width = () => Math.max(320, Math.floor((chartsBox.clientWidth || 900) / 2) - 24);
const axes = [
  { stroke: '#94a3b8', grid: { stroke: '#1e293b' } },
  { stroke: '#94a3b8', grid: { stroke: '#1e293b' } },
];
const throughput = new uPlot(
  {
    title: 'Throughput (updates/s)',
    width: width(),
    height: 220,
    axes,
    series: [{}, { label: 'updates/s', stroke: '#38bdf8', fill: 'rgba(56,189,248,0.15)' }],
  },
  [series.t, series.updates],
  chartsBox,
);
const latency = new uPlot(
  {
    title: 'Latency (ms)',
    width: width(),
    height: 220,
    axes,
    series: [
      {},
      { label: 'ack p50', stroke: '#a3e635' },
      { label: 'ack p99', stroke: '#f59e0b' },
      { label: 'commit p99', stroke: '#f472b6' },
    ],
  },
  [series.t, series.ackP50, series.ackP99, series.commitP99],
  chartsBox,
);
window.addEventListener('resize', () => {
  throughput.setSize({ width: width(), height: 220 });
  latency.setSize({ width: width(), height: 220 });
});
const addPoint = (p) => {
  series.t.push(p.t);
  series.updates.push(p.updates);
  series.ackP50.push(p.ackP50);
  series.ackP99.push(p.ackP99);
  series.commitP99.push(p.commitP99);
  if (series.t.length > 300) for (const k of Object.keys(series)) series[k].shift();
  throughput.setData([series.t, series.updates]);
  latency.setData([series.t, series.ackP50, series.ackP99, series.commitP99]);
};

function renderSummary(s) {
  header.querySelector('.hub').textContent =
    `${s.hub} · chain ${s.chainId} · block ${s.lastBlock} · up ${s.uptimeSeconds}s`;
  tiles['updates-per-second'].textContent = fmt(s.updatesPerSecond);
  tiles['total-updates'].textContent = fmt(s.totalUpdates);
  tiles['ack-p50'].textContent = fmt(s.ackMs.p50);
  tiles['ack-p99'].textContent = fmt(s.ackMs.p99);
  tiles['commit-p99'].textContent = fmt(s.commitMs.p99);
  tiles['channels-open'].textContent = fmt(s.channels.open);
  tiles['connections'].textContent = fmt(s.connections);
  tiles['liquidity'].textContent = s.liquidity ? `${amount(s.liquidity.spent)} / ${amount(s.liquidity.budget)}` : 'off';
}

function renderChannels(p) {
  const head = el(
    'tr',
    {},
    ...COLUMNS.map(([key, label]) => {
      const mark = state.sort === key ? (state.order === 'asc' ? ' ▲' : ' ▼') : '';
      return el(
        'th',
        {
          'data-sort': key,
          class: 'sortable',
          onclick: () => {
            state.order = state.sort === key && state.order === 'desc' ? 'asc' : 'desc';
            state.sort = key;
            state.page = 1;
            void loadChannels();
          },
        },
        label + mark,
      );
    }),
  );
  const body = p.rows.map((r) =>
    el(
      'tr',
      { 'data-channel-id': r.channelId },
      el('td', { title: r.channelId, class: 'mono' }, short(r.channelId)),
      el('td', { title: r.device, class: 'mono' }, (r.connected ? '● ' : '○ ') + short(r.device)),
      el('td', { title: r.token, class: 'mono' }, short(r.token)),
      el('td', { class: 'num', 'data-field': 'depositDevice' }, amount(r.depositDevice)),
      el('td', { class: 'num', 'data-field': 'depositHub' }, amount(r.depositHub)),
      el('td', { class: 'num', 'data-field': 'balanceDevice', 'data-value': r.balanceDevice }, amount(r.balanceDevice)),
      el('td', { class: 'num', 'data-field': 'balanceHub', 'data-value': r.balanceHub }, amount(r.balanceHub)),
      el('td', { class: 'num', 'data-field': 'version', 'data-value': r.version }, amount(r.version)),
      el('td', { 'data-field': 'status' }, r.status),
      el('td', { 'data-field': 'lastActivity' }, ago(r.lastActivity)),
    ),
  );
  table.replaceChildren(el('thead', {}, head), el('tbody', {}, ...body));
  pager.replaceChildren(
    el(
      'button',
      {
        disabled: p.page <= 1 ? '' : null,
        onclick: () => {
          state.page--;
          void loadChannels();
        },
      },
      '‹ Prev',
    ),
    el('span', { 'data-testid': 'page' }, ` page ${p.page} of ${p.pages} · ${p.total.toLocaleString('en')} channels `),
    el(
      'button',
      {
        disabled: p.page >= p.pages ? '' : null,
        onclick: () => {
          state.page++;
          void loadChannels();
        },
      },
      'Next ›',
    ),
  );
}

function renderRounds(rounds) {
  const rows = [];
  // Rounds nobody traded in are not listed (an idle market closes one every round).
  for (const r of rounds
    .filter((x) => x.markets.length > 0)
    .slice(-20)
    .reverse()) {
    for (const m of r.markets)
      rows.push(
        el(
          'tr',
          { 'data-round': r.round },
          el('td', {}, r.round),
          el('td', {}, m.market),
          el('td', { class: 'num' }, m.price === null ? 'no cross' : amount(m.price)),
          el('td', { class: 'num' }, amount(m.quantity)),
        ),
      );
  }
  roundsBody.replaceChildren(...rows);
}

function renderEvents(events) {
  eventsBody.replaceChildren(
    ...events
      .slice(-20)
      .reverse()
      .map((e) =>
        el(
          'tr',
          { 'data-kind': e.kind },
          el('td', {}, ago(e.at)),
          el('td', {}, e.kind),
          el('td', { class: 'mono', title: e.channelId }, short(e.channelId)),
          el(
            'td',
            {},
            e.amount ? `+${amount(e.amount)}` : e.version ? `v${e.version}${e.by ? ` by ${short(e.by)}` : ''}` : '',
          ),
        ),
      ),
  );
}

let loading = false;
async function loadChannels() {
  if (loading) return;
  loading = true;
  try {
    const qs = new URLSearchParams({
      sort: state.sort,
      order: state.order,
      page: String(state.page),
      pageSize: String(state.pageSize),
    });
    if (state.q) qs.set('q', state.q);
    renderChannels(await api(`/api/channels?${qs}`));
  } finally {
    loading = false;
  }
}
search.addEventListener('input', () => {
  state.q = search.value.trim().toLowerCase();
  state.page = 1;
  void loadChannels();
});

const rounds = [];
const events = [];
async function start() {
  const [summary, points, r, e] = await Promise.all([
    api('/api/summary'),
    api('/api/series'),
    api('/api/rounds'),
    api('/api/chain-events'),
  ]);
  renderSummary(summary);
  for (const p of points) addPoint(p);
  rounds.push(...r);
  events.push(...e);
  renderRounds(rounds);
  renderEvents(events);
  await loadChannels();
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => (live.textContent = 'live'));
  source.addEventListener('error', () => (live.textContent = 'reconnecting…'));
  source.addEventListener('tick', (m) => {
    const { point, summary: s } = JSON.parse(m.data);
    addPoint(point);
    renderSummary(s);
    void loadChannels();
  });
  source.addEventListener('round', (m) => {
    rounds.push(JSON.parse(m.data));
    if (rounds.length > 200) rounds.shift();
    renderRounds(rounds);
  });
  source.addEventListener('chain', (m) => {
    events.push(JSON.parse(m.data));
    if (events.length > 500) events.shift();
    renderEvents(events);
  });
}
void start();
