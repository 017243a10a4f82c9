// Topology: who calls whom, with each edge's rate and success rate.

import { h, replace, table } from '../dom.js';
import { get } from '../api.js';
import { rps, pct, ms, successClass } from '../format.js';
import { graphView } from '../graph.js';

const WINDOWS = ['1m', '5m', '15m'];

export async function render(ctx) {
  ctx.title('Topology');
  let win = WINDOWS.includes(ctx.query.get('window')) ? ctx.query.get('window') : '1m';
  const sel = h('select', { id: 'window', onchange: () => { win = sel.value; ctx.setQuery({ window: win === '1m' ? '' : win }); ctx.load(load); } },
    WINDOWS.map((w) => h('option', { value: w, selected: w === win }, w)));
  const graph = h('div', { class: 'graph', id: 'graph' });
  const list = h('div', { id: 'edges' });
  ctx.main.append(h('h1', null, 'Topology'),
    h('div', { class: 'controls' }, h('label', { for: 'window' }, 'Window', sel),
      h('p', { class: 'hint' }, 'Arrows go from caller to callee; green: at least 99% success, amber: 95%, red: below.')),
    graph, h('h2', null, 'Edges'), list);

  async function load() {
    const topo = await get('/api/v1/topology?window=' + win);
    if (!ctx.live()) return;
    if (!topo.edges.length) {
      replace(graph, h('p', { class: 'muted', style: { padding: '1em' } }, `No calls between services in the last ${topo.window}.`));
    } else {
      replace(graph, graphView(topo));
    }
    replace(list, table({
      head: h('tr', null, ['Caller', 'Callee'].map((t) => h('th', { scope: 'col' }, t)), ['RPS', 'Success', 'p99'].map((t) => h('th', { scope: 'col', class: 'num' }, t)), h('th', { scope: 'col' }, 'Measured by')),
      rows: topo.edges.map((e) => h('tr', null,
        h('td', null, h('a', { href: `#/service/${encodeURIComponent(e.source)}` }, e.source)),
        h('td', null, h('a', { href: `#/service/${encodeURIComponent(e.destination)}` }, e.destination)),
        h('td', { class: 'num' }, rps(e.rps)), h('td', { class: 'num ' + successClass(e.successRate) }, pct(e.successRate)),
        h('td', { class: 'num' }, ms(e.p99Ms)), h('td', null, e.reporter + ' side'))),
    }));
  }
  await ctx.every(10000, load);
}
