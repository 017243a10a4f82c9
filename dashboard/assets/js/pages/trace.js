// One trace as a waterfall: its spans in call order (each under its
// parent, siblings by start), a bar per span on the trace's time line.

import { h, table } from '../dom.js';
import { get } from '../api.js';
import { ms, dateTime, value } from '../format.js';

// order walks the span tree depth first; spans whose parent is not in the
// trace (the caller was not traced) are roots.
function order(spans) {
  const ids = new Set(spans.map((s) => s.spanId));
  const kids = new Map();
  for (const s of spans) {
    const p = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : '';
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(s);
  }
  for (const list of kids.values()) list.sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  const out = [];
  const walk = (p, depth) => {
    for (const s of kids.get(p) || []) {
      out.push({ span: s, depth });
      if (depth < 64) walk(s.spanId, depth + 1);
    }
  };
  walk('', 0);
  return out;
}

export async function render(ctx) {
  const id = ctx.arg;
  ctx.title('Trace ' + id.slice(0, 8));
  ctx.main.append(h('p', null, h('a', { href: '#/traces' }, '← Traces')), h('h1', null, 'Trace ', h('code', null, id)));
  const tr = await get('/api/v1/traces/' + encodeURIComponent(id));
  if (!ctx.live()) return;
  const rows = order(tr.spans || []);
  const t0 = Math.min(...rows.map((r) => Date.parse(r.span.start)));
  const t1 = Math.max(...rows.map((r) => Date.parse(r.span.start) + r.span.durationMs));
  const total = Math.max(0.001, t1 - t0);
  const services = [...new Set(rows.map((r) => r.span.service))];
  ctx.main.append(
    h('p', { class: 'muted' }, `${rows.length} spans · ${services.length} services · ${ms(total)} · started ${dateTime(new Date(t0).toISOString())}`),
    h('ol', { class: 'waterfall', id: 'waterfall', 'aria-label': 'Spans in call order' }, rows.map(({ span: s, depth }) => {
      const left = ((Date.parse(s.start) - t0) / total) * 100;
      const width = Math.max(0.2, (s.durationMs / total) * 100);
      const attrs = Object.entries(s.attributes || {});
      return h('li', { dataset: { spanId: s.spanId, parent: s.parentSpanId || '', kind: s.kind, service: s.service, depth } },
        h('div', { class: 'row' },
          h('div', { class: 'name', style: { paddingLeft: depth * 1.1 + 'em' }, title: s.name },
            h('span', { class: `badge ${s.kind}` }, s.kind), ' ', h('strong', null, s.service), ' ', s.name,
            s.status === 'error' ? [' ', h('span', { class: 'badge error' }, 'error')] : null),
          h('div', { class: 'track', role: 'img', 'aria-label': `starts at ${ms(Date.parse(s.start) - t0)}, lasts ${ms(s.durationMs)}` },
            h('div', { class: `bar ${s.kind}${s.status === 'error' ? ' error' : ''}`, style: { left: Math.min(99.8, left) + '%', width: Math.min(100 - Math.min(99.8, left), width) + '%' } }))),
        h('details', null, h('summary', null, `${ms(s.durationMs)} · attributes`),
          table({ head: h('tr', null, h('th', { scope: 'col' }, 'Attribute'), h('th', { scope: 'col' }, 'Value')),
            rows: [['span id', s.spanId], ['instance', s.instance], ...attrs].filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => h('tr', null, h('td', null, h('code', null, k)), h('td', null, value(v)))) })));
    })));
}
