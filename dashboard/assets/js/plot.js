// lineChart draws time series as an SVG line chart: one <path> per series
// (a gap where a point has no value), y gridlines, and relative time on x.
// Each path carries data-series and data-points so that what is drawn can
// be checked; the figure's aria-label says the latest values in words.

import { h, s } from './dom.js';

const W = 560, H = 200, L = 56, R = 12, T = 10, B = 26;

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{name, cls, dash, points: [[timeMs, value|null], ...]}]
// opts: {id, title, label, from, to (ms), format(v) for axis labels, min, max}
export function lineChart(opts) {
  const { series, from, to } = opts;
  const values = series.flatMap((se) => se.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined && isFinite(v)));
  let lo = opts.min !== undefined ? opts.min : 0;
  let hi = opts.max !== undefined ? opts.max : niceMax(Math.max(0, ...values) * 1.05);
  if (hi <= lo) hi = lo + 1;
  const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);

  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': opts.label || opts.title, class: 'chart' });
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, opts.format(v)));
  }
  // Time ticks back from now, at a step that gives at most 6 of them.
  const span = to - from;
  const step = [10, 15, 30, 60, 120, 300, 600].map((x) => x * 1000).find((st) => span / st <= 6) || 900000;
  for (let back = 0; back <= span + 1; back += step) {
    const t = to - back;
    const label = back === 0 ? 'now' : back % 60000 ? `−${back / 1000}s` : `−${back / 60000}m`;
    svg.append(s('line', { class: 'axis', x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }),
      s('text', { x: x(t), y: H - 8, 'text-anchor': back === 0 ? 'end' : 'middle' }, label));
  }
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const se of series) {
    let d = '', n = 0, prevGap = true;
    const lone = [];
    se.points.forEach(([t, v], i) => {
      if (v === null || v === undefined || !isFinite(v)) { prevGap = true; return; }
      const px = x(t).toFixed(1), py = y(Math.min(hi, Math.max(lo, v))).toFixed(1);
      d += (prevGap ? 'M' : 'L') + px + ' ' + py;
      n++;
      const next = se.points[i + 1];
      if (prevGap && (!next || next[1] === null || next[1] === undefined)) lone.push([px, py]);
      prevGap = false;
    });
    const g = s('g', { class: 'series', 'data-series': se.name });
    g.append(s('path', { class: `line s-${se.cls}`, d: d || 'M0 0', 'data-series': se.name, 'data-points': n, visibility: n ? null : 'hidden' }));
    for (const [px, py] of lone) g.append(s('circle', { class: `s-${se.cls}`, cx: px, cy: py, r: 2.5 }));
    svg.append(g);
  }
  const legend = h('ul', { class: 'legend' }, series.map((se) =>
    h('li', null, h('span', { class: `key k-${se.cls}${se.dash ? ' ' + se.dash : ''}`, 'aria-hidden': 'true' }), se.name)));
  return h('figure', { class: 'plot', dataset: { plot: opts.id } }, h('figcaption', null, opts.title), svg, legend);
}
