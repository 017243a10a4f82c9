// The control plane's JSON API, as the pages call it. When the API answers
// 401 the page asks for a token once (a modal dialog), keeps it in
// sessionStorage (this tab only) and sends it as Authorization: Bearer.

const TOKEN_KEY = 'weft.token';

export class APIError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

let asking = null; // one dialog for all the calls that were refused
let dismissed = false; // closed without a token: not asked again until the next page

// askAgain lets the next refused call ask for a token again, after the user
// closed the dialog without one (called on every navigation).
export function askAgain() { dismissed = false; }

function askToken(reason) {
  if (asking) return asking;
  if (dismissed) return Promise.resolve(false);
  const dialog = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  document.getElementById('token-why').textContent = reason;
  asking = new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const tok = input.value.trim();
      input.value = '';
      asking = null;
      if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
      else dismissed = true;
      resolve(Boolean(tok));
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return asking;
}

async function call(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: 'application/json' };
    const tok = sessionStorage.getItem(TOKEN_KEY);
    if (tok) headers.Authorization = 'Bearer ' + tok;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401 && attempt < 5) {
      if (tok) sessionStorage.removeItem(TOKEN_KEY);
      const given = await askToken(tok ? 'The control plane refused the token; enter another.' : "The control plane's API needs a token.");
      if (given) continue;
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!resp.ok) {
      throw new APIError(resp.status, `${method} ${path}: ${(data && data.error) || text.trim() || resp.statusText} (${resp.status})`, path);
    }
    return data;
  }
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body === undefined ? '' : body);

export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }
