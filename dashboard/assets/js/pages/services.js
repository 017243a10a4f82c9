// Services: every service with its instances ready/total and its golden
// metrics over a window, client side and server side; sortable; live.

import { h, replace } from '../dom.js';
import { get } from '../api.js';
import { rps, pct, ms, successClass } from '../format.js';

const WINDOWS = ['1m', '5m', '15m'];
const SIDES = [['client', 'Client side (callers’ sidecars)'], ['server', 'Server side (its own sidecars)']];
const METRICS = [
  ['rps', 'RPS', rps], ['successRate', 'Success', pct],
  ['p50Ms', 'p50', ms], ['p95Ms', 'p95', ms], ['p99Ms', 'p99', ms],
];

export async function render(ctx) {
  ctx.title('Services');
  let win = WINDOWS.includes(ctx.query.get('window')) ? ctx.query.get('window') : '1m';
  let sort = { key: ctx.query.get('sort') || 'name', dir: ctx.query.get('dir') === 'desc' ? -1 : 1 };
  let data = { rows: [] };

  const sel = h('select', { id: 'window', onchange: () => { win = sel.value; save(); ctx.load(load); } },
    WINDOWS.map((w) => h('option', { value: w, selected: w === win }, w)));
  const body = h('tbody');
  const headCells = [];
  const sortButton = (key, label, cls) => {
    const th = h('th', { scope: 'col', class: cls, dataset: { key } },
      h('button', { class: 'sort', type: 'button', dataset: { focus: 'sort-' + key }, onclick: () => {
        sort = { key, dir: sort.key === key ? -sort.dir : (key === 'name' ? 1 : -1) };
        save(); draw();
      } }, label));
    headCells.push(th);
    return th;
  };
  const thead = h('thead', null,
    h('tr', null, h('td', { colspan: 2 }), SIDES.map(([, label]) => h('th', { scope: 'colgroup', colspan: METRICS.length, class: 'group' }, label))),
    h('tr', null, sortButton('name', 'Service'), sortButton('ready', 'Ready', 'num'),
      SIDES.flatMap(([side]) => METRICS.map(([m, label], i) => sortButton(`${side}.${m}`, label, 'num' + (i === 0 ? ' first' : ''))))));
  const summary = h('p', { class: 'muted', id: 'services-summary' });
  ctx.main.append(h('h1', null, 'Services'),
    h('div', { class: 'controls' }, h('label', { for: 'window' }, 'Window', sel), summary),
    h('div', { class: 'scroll' }, h('table', { id: 'services' }, h('caption', { class: 'muted' }, 'Request rate, success rate and latency quantiles per service'), thead, body)));

  function save() { ctx.setQuery({ window: win === '1m' ? '' : win, sort: sort.key === 'name' ? '' : sort.key, dir: sort.dir < 0 ? 'desc' : '' }); }

  const valueOf = (row, key) => {
    if (key === 'name') return row.name;
    if (key === 'ready') return row.ready;
    const [side, m] = key.split('.');
    return row[side] ? row[side][m] : null;
  };

  function draw() {
    for (const th of headCells) {
      if (th.dataset.key === sort.key) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    const rows = [...data.rows].sort((a, b) => {
      const x = valueOf(a, sort.key), y = valueOf(b, sort.key);
      if (x === y) return a.name < b.name ? -1 : 1;
      if (x === null || x === undefined) return 1; // no data sorts last either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sort.dir;
    });
    replace(body, rows.length ? rows.map((r) => h('tr', { dataset: { service: r.name } },
      h('th', { scope: 'row' }, h('a', { href: `#/service/${encodeURIComponent(r.name)}`, dataset: { focus: 'svc-' + r.name } }, r.name)),
      h('td', { class: 'num' + (r.total && r.ready < r.total ? ' warn' : ''), dataset: { col: 'ready', ready: r.ready, total: r.total } }, r.registered ? `${r.ready}/${r.total}` : '–'),
      SIDES.flatMap(([side]) => METRICS.map(([m, , fmt], i) => {
        const v = r[side] ? r[side][m] : null;
        const cls = ['num', i === 0 ? 'first' : '', m === 'successRate' ? successClass(v) : ''].filter(Boolean).join(' ');
        return h('td', { class: cls, dataset: { col: `${side}-${m}`, value: v === null || v === undefined ? '' : v } }, fmt(v));
      })))) : h('tr', null, h('td', { colspan: 2 + 2 * METRICS.length, class: 'muted' }, 'No service has registered yet.')));
    summary.textContent = `${data.rows.length} services · over the last ${win} · scraped every ${data.interval || '?'}` +
      (data.failed ? ` · ${data.failed} of ${data.targets} sidecars not answering` : '');
  }

  async function load() {
    const [svcs, stats] = await Promise.all([get('/api/v1/services'), get('/api/v1/stats?window=' + win)]);
    if (!ctx.live()) return;
    const byName = new Map();
    for (const sv of svcs.services || []) {
      const ready = sv.instances.filter((i) => i.ready).length;
      byName.set(sv.name, { name: sv.name, registered: true, ready, total: sv.instances.length, client: null, server: null });
    }
    for (const st of stats.services || []) {
      const row = byName.get(st.service) || { name: st.service, registered: false, ready: 0, total: 0 };
      row.client = st.client;
      row.server = st.server;
      byName.set(st.service, row);
    }
    data = { rows: [...byName.values()], window: stats.window, interval: stats.scrape && stats.scrape.interval,
      failed: stats.scrape && stats.scrape.failed, targets: stats.scrape && stats.scrape.targets };
    draw();
  }
  await ctx.every(5000, load);
}
