// Traces: the recent traces the control plane keeps, filtered by service,
// minimum duration and errors.

import { h, replace, table } from '../dom.js';
import { get } from '../api.js';
import { ms, time } from '../format.js';

export async function render(ctx) {
  ctx.title('Traces');
  const q = ctx.query;
  const svc = h('input', { id: 'f-service', type: 'text', name: 'service', value: q.get('service') || '', placeholder: 'any', autocomplete: 'off', list: 'service-names' });
  const names = h('datalist', { id: 'service-names' });
  const min = h('input', { id: 'f-min', type: 'number', name: 'min', min: 0, step: 'any', value: q.get('min') || '', placeholder: '0', inputmode: 'decimal' });
  const LIMITS = ['50', '100', '500', '1000'];
  const limit = h('select', { id: 'f-limit', name: 'limit' }, LIMITS.map((n) => h('option', { value: n, selected: n === (LIMITS.includes(q.get('limit')) ? q.get('limit') : '100') }, n)));
  const errors = h('input', { id: 'f-errors', type: 'checkbox', name: 'errors', checked: q.get('errors') === '1' });
  const result = h('div', { id: 'trace-list' });
  const count = h('p', { class: 'muted', role: 'status' });
  const form = h('form', { class: 'controls', role: 'search', 'aria-label': 'Filter traces', onsubmit: (e) => { e.preventDefault(); apply(); } },
    h('label', { for: 'f-service' }, 'Service', svc), names,
    h('label', { for: 'f-min' }, 'Min duration (ms)', min),
    h('label', { for: 'f-limit' }, 'Most recent', limit),
    h('label', { class: 'check', for: 'f-errors' }, errors, 'Errors only'),
    h('button', { type: 'submit' }, 'Filter'));
  ctx.main.append(h('h1', null, 'Traces'), form, count, result);

  function apply() {
    ctx.setQuery({ service: svc.value.trim(), min: min.value, errors: errors.checked ? '1' : '', limit: limit.value === '100' ? '' : limit.value });
    ctx.load(load);
  }
  errors.addEventListener('change', apply);
  limit.addEventListener('change', apply);

  async function load() {
    const service = svc.value.trim();
    const [list, svcs] = await Promise.all([
      get('/api/v1/traces?limit=' + limit.value + (service ? '&service=' + encodeURIComponent(service) : '')), get('/api/v1/services')]);
    if (!ctx.live()) return;
    replace(names, (svcs.services || []).map((x) => h('option', { value: x.name })));
    const minMs = parseFloat(min.value) || 0;
    const shown = (list.traces || []).filter((t) => t.durationMs >= minMs && (!errors.checked || t.error));
    count.textContent = `${shown.length} of ${(list.traces || []).length} recent traces`;
    replace(result, table({
      className: 'traces',
      head: h('tr', null, h('th', { scope: 'col' }, 'Started'), h('th', { scope: 'col' }, 'Root'), h('th', { scope: 'col' }, 'Services'),
        h('th', { scope: 'col', class: 'num' }, 'Spans'), h('th', { scope: 'col', class: 'num' }, 'Duration'), h('th', { scope: 'col' }, 'Status')),
      rows: shown.length ? shown.map((t) => h('tr', { dataset: { trace: t.traceId } },
        h('td', null, time(t.start)),
        h('td', null, h('a', { href: `#/trace/${t.traceId}`, dataset: { focus: 't-' + t.traceId } }, `${t.rootService}: ${t.rootName}`)),
        h('td', null, (t.services || []).join(', ')),
        h('td', { class: 'num' }, t.spans), h('td', { class: 'num' }, ms(t.durationMs)),
        h('td', { class: t.error ? 'bad' : 'ok' }, t.error ? 'error' : 'ok'))) :
        h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'No trace matches. Traces are kept for sampled requests (--trace-sampling).')),
    }));
  }
  await ctx.every(15000, load);
}
