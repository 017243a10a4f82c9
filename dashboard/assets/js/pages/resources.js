// Resources: every applied resource as YAML, and the results of the
// latest applies.

import { h, append, table } from '../dom.js';
import { get } from '../api.js';
import { dateTime } from '../format.js';
import { toYAML } from '../yaml.js';

export async function render(ctx) {
  ctx.title('Resources');
  const [res, applies] = await Promise.all([get('/api/v1/resources'), get('/api/v1/applies')]);
  if (!ctx.live()) return;
  const items = res.items || [];
  const kinds = [...new Set(items.map((o) => o.kind))].sort();
  append(ctx.main, h('h1', null, 'Resources'),
    h('h2', null, 'Latest applies'),
    (applies.applies || []).length ? table({
      className: 'applies',
      head: h('tr', null, ['At', 'Operation', 'Result'].map((t) => h('th', { scope: 'col' }, t))),
      rows: applies.applies.map((a) => h('tr', null, h('td', null, dateTime(a.at)), h('td', null, a.operation),
        h('td', { class: a.error ? 'bad' : '' }, a.error ? a.error : a.results.map((r) => `${r.kind}/${r.name} ${r.result}`).join(', ')))),
    }) : h('p', { class: 'muted' }, 'Nothing applied since this control plane started.'),
    h('h2', null, `Applied (${items.length})`),
    items.length ? null : h('p', { class: 'muted' }, 'No resource applied. Apply one with weft apply -f FILE.'),
    kinds.map((k) => [h('h3', null, k), table({
      head: h('tr', null, ['Name', 'Service', 'Generation', 'Manifest'].map((t) => h('th', { scope: 'col' }, t))),
      rows: items.filter((o) => o.kind === k).map((o) => h('tr', { dataset: { kind: o.kind, name: o.metadata.name } },
        h('th', { scope: 'row' }, h('code', null, o.metadata.name)),
        h('td', null, o.spec && o.spec.service ? h('a', { href: `#/service/${encodeURIComponent(o.spec.service)}` }, o.spec.service) : '–'),
        h('td', { class: 'num' }, o.metadata.generation || '–'),
        h('td', null, h('details', null, h('summary', null, 'YAML'), h('pre', null, h('code', null, toYAML(o))))))),
    })]));
}
