// Number and time formats shared by the pages.

export function rps(v) {
  if (v === undefined || v === null) return '–';
  if (v === 0) return '0';
  if (v < 0.1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  if (v < 1000) return v.toFixed(1);
  return Math.round(v).toLocaleString('en');
}

export function pct(v) {
  if (v === undefined || v === null) return '–';
  const p = v * 100;
  if (p === 100) return '100%';
  return (p >= 99 ? p.toFixed(2) : p.toFixed(1)) + '%';
}

export function ms(v) {
  if (v === undefined || v === null) return '–';
  if (v < 1) return v.toFixed(2) + ' ms';
  if (v < 100) return v.toFixed(1) + ' ms';
  if (v < 10000) return Math.round(v) + ' ms';
  return (v / 1000).toFixed(1) + ' s';
}

export function count(v) {
  if (v === undefined || v === null) return '–';
  return Math.round(v).toLocaleString('en');
}

// successClass grades a success rate for colour; the number is always shown too.
export function successClass(v) {
  if (v === undefined || v === null) return '';
  if (v >= 0.99) return 'ok';
  if (v >= 0.95) return 'warn';
  return 'bad';
}

export function time(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

export function dateTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// title turns a JSON field name into a column heading: ejectedReason → Ejected reason.
export function title(key) {
  const words = String(key).replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/[_-]+/g, ' ').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// value renders any JSON value compactly for a table cell.
export function value(v) {
  if (v === undefined || v === null || v === '') return '–';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(3);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
