// Topics: publish and delivery rates, lag per subscription, dead letters
// with replay.

import { h, replace, table } from '../dom.js';
import { get, post } from '../api.js';
import { rps, count, dateTime } from '../format.js';

export async function render(ctx) {
  ctx.title('Topics');
  const head = h('p', { class: 'muted', id: 'broker' });
  const list = h('div', { id: 'topics' });
  const dlq = h('section', { id: 'dlq', 'aria-live': 'polite' });
  ctx.main.append(h('h1', null, 'Topics'), head, list, dlq);
  let open = ''; // topic whose dead letters are shown

  // showDLQ lists topic's dead letters; said is the last replay's outcome.
  async function showDLQ(topic, said = '', focus = false) {
    open = topic;
    const d = await get(`/api/v1/topics/${encodeURIComponent(topic)}/dlq?limit=50`);
    if (!ctx.live() || open !== topic) return;
    const result = h('p', { role: 'status', id: 'replay-result' }, said);
    const replay = h('button', { type: 'button', id: 'replay', disabled: d.total === 0, onclick: async () => {
      replay.disabled = true;
      result.textContent = 'Replaying…';
      let outcome;
      try {
        const r = await post(`/api/v1/topics/${encodeURIComponent(topic)}/dlq/replay`);
        outcome = `Replayed ${r.replayed}` + (r.failed ? `, ${r.failed} failed` : '') + `; ${r.remaining} left.` + (r.errors ? ' ' + r.errors.join('; ') : '');
      } catch (err) {
        outcome = err.message;
      }
      await ctx.load(() => showDLQ(topic, outcome));
    } }, `Replay ${count(d.total)} dead letters to ${topic}`);
    const heading = h('h2', { tabindex: -1 }, 'Dead letters of ', h('code', null, topic));
    replace(dlq, heading,
      h('p', { class: 'muted' }, `${count(d.total)} in ${d.deadLetterTopics.join(', ')}; showing ${d.messages.length}.`),
      h('div', { class: 'controls' }, replay, h('button', { type: 'button', class: 'secondary', onclick: () => { open = ''; replace(dlq); } }, 'Close')), result,
      d.messages.length ? table({
        head: h('tr', null, ['Seq', 'Id', 'Subscriber', 'Attempts', 'Reason', 'At', 'Size', 'Payload'].map((t) => h('th', { scope: 'col' }, t))),
        rows: d.messages.map((m) => h('tr', { dataset: { seq: m.sequence } },
          h('td', { class: 'num' }, m.sequence), h('td', null, h('code', null, m.id)), h('td', null, m.subscriber), h('td', { class: 'num' }, m.attempts),
          h('td', null, m.reason), h('td', null, m.at ? dateTime(m.at) : '–'), h('td', { class: 'num' }, m.size),
          h('td', null, h('code', null, m.payload + (m.truncated ? '…' : ''))))),
      }) : null);
    if (focus) heading.focus(); // the list is below the topics: take the user there
  }

  async function load() {
    const t = await get('/api/v1/topics');
    if (!ctx.live()) return;
    head.textContent = `Broker ${t.broker} · ${t.connected ? 'connected' : 'not connected'}`;
    if (!t.topics.length) {
      replace(list, h('p', { class: 'muted' }, 'No topic has messages or subscriptions yet.'));
      return;
    }
    replace(list, t.topics.map((tp) => h('section', { class: 'topic', dataset: { topic: tp.name } },
      h('h2', null, h('code', null, tp.name)),
      h('ul', { class: 'cards' },
        h('li', null, h('span', { class: 'v', dataset: { col: 'rate' } }, rps(tp.rate)), h('span', { class: 'k' }, 'published/s')),
        h('li', null, h('span', { class: 'v' }, count(tp.messages)), h('span', { class: 'k' }, 'stored')),
        h('li', null, h('span', { class: 'v' + (tp.deadLetters ? ' bad' : '') }, count(tp.deadLetters)), h('span', { class: 'k' }, 'dead letters'))),
      tp.subscriptions.length ? table({
        head: h('tr', null, h('th', { scope: 'col' }, 'Subscriber'), ['Lag', 'In flight', 'Redelivered', 'Delivered', 'Delivered/s', 'Dead-lettered'].map((x) => h('th', { scope: 'col', class: 'num' }, x)), h('th', { scope: 'col' }, 'Origin')),
        rows: tp.subscriptions.map((s) => h('tr', { dataset: { subscriber: s.service } },
          h('th', { scope: 'row' }, h('a', { href: `#/service/${encodeURIComponent(s.service)}` }, s.service)),
          h('td', { class: 'num' + (s.lag ? ' warn' : ''), dataset: { col: 'lag' } }, count(s.lag)), h('td', { class: 'num' }, count(s.inFlight)),
          h('td', { class: 'num' }, count(s.redelivered)), h('td', { class: 'num' }, count(s.delivered)), h('td', { class: 'num' }, rps(s.rate)),
          h('td', { class: 'num' + (s.deadLettered ? ' bad' : '') }, count(s.deadLettered)), h('td', null, s.origin))),
      }) : h('p', { class: 'muted' }, 'No subscription.'),
      tp.deadLetters ? h('p', null, h('button', { type: 'button', class: 'secondary', dataset: { focus: 'dlq-' + tp.name }, onclick: () => ctx.load(() => showDLQ(tp.name, '', true)) },
        `Dead letters (${count(tp.deadLetters)})`)) : null)));
  }
  await ctx.every(5000, load);
}
