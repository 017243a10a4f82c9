// Small DOM helpers. Text always goes in as text nodes, never as HTML, so
// nothing the API returns (service names, labels, payloads) can inject markup.

const SVG = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, ...children) {
  for (const c of [children].flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// h('a', {href: '#/x'}, 'text', child, ...)
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// s('path', {d: ...}): an SVG element.
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

// replace swaps el's children for new ones and keeps keyboard focus on the
// element with the same data-focus key, so a live refresh does not throw
// the user's focus back to the top of the page.
export function replace(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset.focus : undefined;
  el.replaceChildren();
  append(el, children);
  if (key) {
    const again = [...el.querySelectorAll('[data-focus]')].find((e) => e.dataset.focus === key);
    if (again) again.focus({ preventScroll: true });
  }
  return el;
}

export function table({ caption, head, rows, className }) {
  return h('div', { class: 'scroll' }, h('table', { class: className },
    caption ? h('caption', { class: 'muted' }, caption) : null,
    h('thead', null, head), h('tbody', null, rows)));
}
