// graphView draws who calls whom as an SVG: services in columns by their
// depth in the call graph (callers left of callees), an arrow per edge
// with its rate and success rate written on it. Nodes are links to the
// service's page, reachable with the keyboard.

import { s } from './dom.js';
import { rps, pct, successClass } from './format.js';

const NW = 150, NH = 36, COL = 270, ROW = 78, PAD = 24;

// layers gives each service its column: the longest path of calls leading
// to it (bounded, so a cycle cannot loop).
function layers(services, edges) {
  const layer = new Map(services.map((n) => [n, 0]));
  for (let pass = 0; pass < services.length; pass++) {
    let moved = false;
    for (const e of edges) {
      if (e.source === e.destination) continue;
      const want = Math.min(services.length - 1, layer.get(e.source) + 1);
      if (layer.get(e.destination) < want) { layer.set(e.destination, want); moved = true; }
    }
    if (!moved) break;
  }
  return layer;
}

export function graphView(topology) {
  const services = [...new Set([...topology.services, ...topology.edges.flatMap((e) => [e.source, e.destination])])].sort();
  const edges = topology.edges;
  const layer = layers(services, edges);
  const cols = [];
  for (const n of services) (cols[layer.get(n)] ||= []).push(n);
  const pos = new Map();
  const rows = Math.max(1, ...cols.map((c) => (c ? c.length : 0)));
  cols.forEach((c, i) => (c || []).forEach((n, j) => {
    const offset = ((rows - c.length) * ROW) / 2;
    pos.set(n, { x: PAD + i * COL, y: PAD + 20 + offset + j * ROW });
  }));
  const width = PAD * 2 + Math.max(0, cols.length - 1) * COL + NW;
  const height = PAD * 2 + 20 + rows * ROW;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'group', 'aria-label': 'Service call graph' });
  const defs = s('defs');
  for (const c of ['ok', 'warn', 'bad']) {
    defs.append(s('marker', { id: `arrow-${c}`, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M0 0L10 5L0 10z', class: `arrowhead-${c}` })));
  }
  svg.append(defs);
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.destination);
    if (!a || !b) continue;
    const grade = successClass(e.successRate) || 'ok';
    let d, lx, ly;
    if (e.source === e.destination) {
      const x0 = a.x + NW - 30, y0 = a.y;
      d = `M${x0} ${y0}C${x0} ${y0 - 40} ${x0 + 50} ${y0 - 40} ${x0 + 30} ${y0}`;
      lx = x0 + 20; ly = y0 - 36;
    } else if (b.x > a.x) {
      const x0 = a.x + NW, y0 = a.y + NH / 2, x1 = b.x, y1 = b.y + NH / 2, mx = (x0 + x1) / 2;
      d = `M${x0} ${y0}C${mx} ${y0} ${mx} ${y1} ${x1} ${y1}`;
      lx = mx; ly = (y0 + y1) / 2 - 6;
    } else {
      // A call back to a column on the left (or the same one): an arc above.
      const x0 = a.x + NW / 2, y0 = a.y, x1 = b.x + NW / 2 + 10, y1 = b.y, top = Math.min(y0, y1) - 50;
      d = `M${x0} ${y0}C${x0} ${top} ${x1} ${top} ${x1} ${y1}`;
      lx = (x0 + x1) / 2; ly = top + 8;
    }
    const label = `${rps(e.rps)} rps · ${pct(e.successRate)}`;
    const g = s('g', { class: `edge ${grade}`, 'data-source': e.source, 'data-destination': e.destination, 'data-rps': e.rps, 'data-success': e.successRate },
      s('title', null, `${e.source} → ${e.destination}: ${label}, p99 ${e.p99Ms.toFixed(1)} ms (${e.reporter} side)`),
      s('path', { d, 'marker-end': `url(#arrow-${grade})` }),
      s('rect', { class: 'label', x: lx - label.length * 3.2, y: ly - 11, width: label.length * 6.4, height: 15, rx: 3 }),
      s('text', { x: lx, y: ly, 'text-anchor': 'middle' }, label));
    svg.append(g);
  }
  for (const n of services) {
    const p = pos.get(n);
    const name = n.length > 20 ? n.slice(0, 19) + '…' : n;
    svg.append(s('a', { href: `#/service/${encodeURIComponent(n)}`, class: 'node', 'data-service': n, 'aria-label': `service ${n}` },
      s('title', null, n),
      s('rect', { x: p.x, y: p.y, width: NW, height: NH }),
      s('text', { x: p.x + NW / 2, y: p.y + NH / 2 + 5, 'text-anchor': 'middle' }, name)));
  }
  return svg;
}
