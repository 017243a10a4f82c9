// Service detail: instances, plots of the last 15 minutes, the resources
// that configure the service, its callers and callees.

import { h, replace, table } from '../dom.js';
import { get } from '../api.js';
import { rps, pct, ms, successClass, title, value } from '../format.js';
import { lineChart } from '../plot.js';
import { toYAML } from '../yaml.js';

// Instance fields with a column of their own, in this order; any other
// field the API returns (ejection, load, identity, ...) gets a column too.
const KNOWN = ['id', 'address', 'zone', 'version', 'labels', 'ready'];

function instancesTable(instances) {
  const extra = [];
  for (const inst of instances) for (const k of Object.keys(inst)) if (!KNOWN.includes(k) && !extra.includes(k)) extra.push(k);
  const cols = [...KNOWN, ...extra];
  return table({
    className: 'instances',
    head: h('tr', null, cols.map((c) => h('th', { scope: 'col' }, title(c)))),
    rows: instances.length ? instances.map((inst) => h('tr', { dataset: { instance: inst.id } }, cols.map((c) => {
      const v = inst[c];
      if (c === 'labels') {
        const entries = Object.entries(v || {});
        return h('td', { class: 'labels' }, entries.length ? entries.map(([k, lv]) => h('code', null, `${k}=${lv}`)) : '–');
      }
      if (c === 'ready') return h('td', { class: v ? 'ok' : 'bad', dataset: { col: c } }, v ? 'ready' : 'not ready');
      if (c === 'id') return h('th', { scope: 'row' }, h('code', null, v));
      return h('td', { dataset: { col: c } }, value(v));
    }))) : h('tr', null, h('td', { colspan: cols.length, class: 'muted' }, 'No instance registered.')),
  });
}

// configures says whether a stored resource is about this service.
function configures(obj, name) {
  const sp = obj.spec || {};
  return sp.service === name || sp.destination === name || sp.host === name ||
    (Array.isArray(sp.services) && sp.services.includes(name)) || (Array.isArray(sp.hosts) && sp.hosts.includes(name));
}

function edgesTable(edges, other, empty) {
  if (!edges.length) return h('p', { class: 'muted' }, empty);
  return table({
    head: h('tr', null, h('th', { scope: 'col' }, 'Service'), ['RPS', 'Success', 'p50', 'p99'].map((t) => h('th', { scope: 'col', class: 'num' }, t))),
    rows: edges.map((e) => {
      const v = e.client || e.server;
      const name = e[other];
      return h('tr', { dataset: { edge: name } },
        h('th', { scope: 'row' }, h('a', { href: `#/service/${encodeURIComponent(name)}` }, name)),
        h('td', { class: 'num' }, rps(v.rps)), h('td', { class: 'num ' + successClass(v.successRate) }, pct(v.successRate)),
        h('td', { class: 'num' }, ms(v.p50Ms)), h('td', { class: 'num' }, ms(v.p99Ms)));
    }),
  });
}

function plots(series) {
  const pts = series.points || [];
  const to = pts.length ? Date.parse(pts[pts.length - 1].at) : Date.now();
  // Fifteen minutes, or since the first point when the control plane has
  // not been up that long (at least a minute).
  const first = pts.length ? Date.parse(pts[0].at) - pts[0].seconds * 1000 : to;
  const from = Math.min(to - 60000, Math.max(to - 15 * 60000, first));
  const line = (side, f) => pts.map((p) => [Date.parse(p.at), p[side] ? f(p[side]) : null]);
  const rate = (side) => pts.map((p) => [Date.parse(p.at), p[side] ? p[side].rps : 0]);
  const last = (side, f) => { for (let i = pts.length - 1; i >= 0; i--) if (pts[i][side]) return f(pts[i][side]); return null; };
  const successes = pts.flatMap((p) => ['client', 'server'].filter((s) => p[s]).map((s) => p[s].successRate * 100));
  const minSuccess = Math.max(0, Math.min(90, Math.floor(Math.min(100, ...successes) / 10) * 10));
  const quantiles = (side) => ['p50', 'p95', 'p99'].map((q, i) => ({ name: `${side} ${q}`, cls: q, dash: ['', 'dashed', 'dotted'][i], points: line(side, (v) => v[q + 'Ms']) }));
  const said = (label, f, fmt) => `${label}, last 15 minutes. Latest: client ${fmt(last('client', f))}, server ${fmt(last('server', f))}.`;
  return h('div', { class: 'plots' },
    lineChart({ id: 'rate', title: 'Request rate (requests/s)', from, to, format: rps,
      label: said('Request rate', (v) => v.rps, rps),
      series: [{ name: 'client', cls: 'client', points: rate('client') }, { name: 'server', cls: 'server', dash: 'dashed', points: rate('server') }] }),
    lineChart({ id: 'success', title: 'Success rate (%)', from, to, min: minSuccess, max: 100, format: (v) => v.toFixed(Number.isInteger(v) ? 0 : 1) + '%',
      label: said('Success rate', (v) => v.successRate, pct),
      series: [{ name: 'client', cls: 'client', points: line('client', (v) => v.successRate * 100) }, { name: 'server', cls: 'server', dash: 'dashed', points: line('server', (v) => v.successRate * 100) }] }),
    lineChart({ id: 'latency-client', title: 'Latency, client side (ms)', from, to, format: (v) => v.toFixed(v < 10 ? 1 : 0),
      label: said('Client-side p99 latency', (v) => v.p99Ms, ms), series: quantiles('client') }),
    lineChart({ id: 'latency-server', title: 'Latency, server side (ms)', from, to, format: (v) => v.toFixed(v < 10 ? 1 : 0),
      label: said('Server-side p99 latency', (v) => v.p99Ms, ms), series: quantiles('server') }));
}

export async function render(ctx) {
  const name = ctx.arg;
  ctx.title(name);
  const q = encodeURIComponent(name);
  const cards = h('ul', { class: 'cards', id: 'service-cards' });
  const inst = h('div', { id: 'instances' });
  const plotBox = h('div', { id: 'plots' });
  const conf = h('div', { id: 'config' });
  const callers = h('div', { id: 'callers' });
  const callees = h('div', { id: 'callees' });
  const interval = h('span');
  ctx.main.append(
    h('p', null, h('a', { href: '#/services' }, '← Services')),
    h('h1', null, 'Service ', h('code', null, name)), cards,
    h('h2', null, 'Instances'), inst,
    h('h2', null, 'Last 15 minutes'), h('p', { class: 'hint' }, 'One point per scrape interval', interval, '. Client side: as the callers’ sidecars saw the calls; server side: as this service’s own sidecars did.'), plotBox,
    h('h2', null, 'Callers'), callers, h('h2', null, 'Callees'), callees,
    h('h2', null, 'Policies and routes'), conf);

  await ctx.every(10000, async () => {
    const [svcs, series, stats, res] = await Promise.all([
      get('/api/v1/services'), get(`/api/v1/series?service=${q}&window=15m`), get('/api/v1/stats?window=1m'), get('/api/v1/resources')]);
    if (!ctx.live()) return;
    const sv = (svcs.services || []).find((x) => x.name === name) || { instances: [] };
    const st = (stats.services || []).find((x) => x.service === name) || {};
    const ready = sv.instances.filter((i) => i.ready).length;
    replace(cards,
      h('li', null, h('span', { class: 'v' }, `${ready}/${sv.instances.length}`), h('span', { class: 'k' }, 'instances ready')),
      ['client', 'server'].flatMap((side) => [
        h('li', null, h('span', { class: 'v' }, rps(st[side] && st[side].rps)), h('span', { class: 'k' }, `RPS, ${side} side (1m)`)),
        h('li', null, h('span', { class: 'v ' + successClass(st[side] && st[side].successRate) }, pct(st[side] && st[side].successRate)), h('span', { class: 'k' }, `success, ${side} side`)),
        h('li', null, h('span', { class: 'v' }, ms(st[side] && st[side].p99Ms)), h('span', { class: 'k' }, `p99, ${side} side`)),
      ]));
    replace(inst, instancesTable(sv.instances));
    interval.textContent = ` (${series.interval})`;
    replace(plotBox, plots(series));
    const edges = stats.edges || [];
    replace(callers, edgesTable(edges.filter((e) => e.destination === name), 'source', 'No calls to this service in the last minute.'));
    replace(callees, edgesTable(edges.filter((e) => e.source === name), 'destination', 'No calls from this service in the last minute.'));
    const mine = (res.items || []).filter((o) => configures(o, name));
    replace(conf, mine.length ? mine.map((o) => h('section', { class: 'resource', dataset: { kind: o.kind, name: o.metadata.name } },
      h('h3', null, `${o.kind} `, h('code', null, o.metadata.name), o.metadata.generation ? h('span', { class: 'muted' }, ` · generation ${o.metadata.generation}`) : null),
      h('pre', null, h('code', null, toYAML(o))))) : h('p', { class: 'muted' }, 'No resource configures this service: it is called with the defaults (round robin, 15 s timeout).'));
  });
}
