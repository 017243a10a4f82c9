// toYAML renders a JSON value as YAML, the way a resource is written by
// hand, so the applied policy reads like the manifest that made it.

const plain = /^[A-Za-z0-9_/.][A-Za-z0-9_ ./:@+-]*$/;
const numeric = /^([-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?|0x[0-9a-fA-F]+|0o[0-7]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$/;
const reserved = /^(true|false|yes|no|on|off|null|~|y|n)$/i;

function scalar(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = String(v);
  if (s !== '' && plain.test(s) && !numeric.test(s) && !reserved.test(s) && !/\s$/.test(s) && !s.includes(': ') && !s.includes(' #')) return s;
  return JSON.stringify(s);
}

function isEmpty(v) {
  return (Array.isArray(v) && v.length === 0) || (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);
}

function lines(v, indent) {
  const pad = '  '.repeat(indent);
  const out = [];
  if (Array.isArray(v)) {
    for (const item of v) {
      if (item && typeof item === 'object' && !isEmpty(item)) {
        const inner = lines(item, indent + 1);
        out.push(pad + '- ' + inner[0].trimStart());
        out.push(...inner.slice(1));
      } else {
        out.push(pad + '- ' + (isEmpty(item) ? (Array.isArray(item) ? '[]' : '{}') : scalar(item)));
      }
    }
    return out;
  }
  for (const [k, val] of Object.entries(v)) {
    const key = scalar(k);
    if (val && typeof val === 'object' && !isEmpty(val)) {
      out.push(pad + key + ':');
      out.push(...lines(val, Array.isArray(val) ? indent : indent + 1));
    } else {
      out.push(pad + key + ': ' + (isEmpty(val) ? (Array.isArray(val) ? '[]' : '{}') : scalar(val)));
    }
  }
  return out;
}

export function toYAML(v) {
  if (v === null || typeof v !== 'object') return scalar(v) + '\n';
  if (isEmpty(v)) return (Array.isArray(v) ? '[]' : '{}') + '\n';
  return lines(v, 0).join('\n') + '\n';
}
