// The dashboard's shell: hash routes to pages, live refresh, the status
// line and the error banner. Each page module exports render(ctx).

import * as services from './pages/services.js';
import * as service from './pages/service.js';
import * as topology from './pages/topology.js';
import * as traces from './pages/traces.js';
import * as trace from './pages/trace.js';
import * as topics from './pages/topics.js';
import * as resources from './pages/resources.js';
import { askAgain } from './api.js';

const pages = { services, service, topology, traces, trace, topics, resources };
// Which nav entry a page belongs to.
const section = { service: 'services', trace: 'traces' };

const main = document.getElementById('main');
const alertBox = document.getElementById('alert');
const statusLine = document.getElementById('status');

let generation = 0;
let timers = [];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const [name, ...rest] = path.split('/');
  return { name: name || 'services', arg: rest.length ? decodeURIComponent(rest.join('/')) : '', query: new URLSearchParams(query) };
}

export function showError(err) {
  alertBox.textContent = err instanceof Error ? err.message : String(err);
  alertBox.hidden = false;
}

function clearError() {
  alertBox.hidden = true;
  alertBox.textContent = '';
}

function updated() {
  statusLine.textContent = 'Updated ' + new Date().toLocaleTimeString('en-GB', { hour12: false });
}

// setQuery changes the page's query in the URL (so the view stays
// linkable) without rendering the page again.
function setQuery(params) {
  const { name, arg } = parseHash();
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== null && v !== false) q.set(k, v);
  const hash = '#/' + name + (arg ? '/' + encodeURIComponent(arg) : '') + (q.toString() ? '?' + q : '');
  history.replaceState(null, '', hash);
}

async function route() {
  const gen = ++generation;
  timers.forEach(clearInterval);
  timers = [];
  clearError();
  askAgain();
  const r = parseHash();
  const page = pages[r.name];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === (section[r.name] || r.name)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!page) {
    document.title = 'Not found · Weft';
    main.append(Object.assign(document.createElement('h1'), { textContent: 'No such page' }));
    showError(`no page "${r.name}": try Services, Topology, Traces, Topics or Resources`);
    return;
  }
  const live = () => gen === generation;
  // guard runs one load of the page; a failure is shown, not thrown, so
  // a refresh that fails once tries again on its next tick.
  const guard = async (fn) => {
    try {
      await fn();
      if (live()) { clearError(); updated(); }
    } catch (err) {
      if (live()) showError(err);
    }
  };
  const ctx = {
    main, arg: r.arg, query: r.query, live, setQuery,
    title(t) { document.title = t + ' · Weft'; },
    // every runs fn now and then every ms while the page is shown.
    every(ms, fn) {
      const tick = () => guard(fn);
      timers.push(setInterval(() => { if (live() && !document.hidden) tick(); }, ms));
      return tick();
    },
    load: guard,
  };
  await guard(() => page.render(ctx));
  if (live() && sessionStorage.getItem('weft.focusMain') === '1') {
    // After a navigation the user chose, focus moves to the new page's
    // heading, as a screen reader user expects.
    sessionStorage.removeItem('weft.focusMain');
    const h1 = main.querySelector('h1');
    if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
  }
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[href^="#/"]');
  if (a) sessionStorage.setItem('weft.focusMain', '1');
});
document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (e) => showError(e.reason));
route();
