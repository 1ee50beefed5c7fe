"""The live status page of ``redline serve`` and ``redline cluster``: one HTML document with
its CSS and script inline (no build step, nothing fetched but its own JSON), in the spirit of
HAProxy's stats page.

The script polls the JSON endpoint every *refresh* seconds (``?refresh=S`` in the page's URL
overrides it) and draws either document kind, ``"server"`` (:mod:`redline.serve.status_page`)
or ``"cluster"`` (:mod:`redline.lb.status_server`). Figures carry ``data-figure``, replica
rows ``data-replica`` / ``data-state``, and ``<body data-polls>`` counts the answers drawn,
for people's scripts and for the tests. When the
endpoint answers 401 the page asks for an API key, keeps it in ``sessionStorage`` for the tab
and sends it as a bearer token::

    html = render_status_page(title="redline serve", source="status.json", refresh=2.0)
"""

from __future__ import annotations

import html
import json

__all__ = ["CONTENT_SECURITY_POLICY", "render_status_page"]

#: Sent with the page: scripts and styles from the page itself, requests to its own origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_STYLE = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
background:#fff}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.25rem 1rem;padding:.75rem 1rem;
background:#24292f;color:#fff}
header h1{font-size:1.1rem;margin:0}
#live{font-size:.85rem;color:#d0d7de}
#live.stale{color:#ffb3b3;font-weight:600}
main{padding:.75rem 1rem 2rem;max-width:1200px}
h2{font-size:1rem;margin:1.25rem 0 .5rem;border-bottom:1px solid var(--line);padding-bottom:.25rem}
.note{color:var(--mute);font-size:.85rem;margin:.25rem 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.5rem}
.card{border:1px solid var(--line);border-radius:6px;padding:.5rem .75rem;background:var(--bg)}
.card .label{font-size:.8rem;color:var(--mute)}
.card .value{font-size:1.35rem;font-weight:600;font-variant-numeric:tabular-nums;
white-space:nowrap}
.card .value small{font-size:.8rem;font-weight:400}
.card .sub{font-size:.8rem;color:var(--mute);overflow-wrap:anywhere}
.card.bad{border-color:var(--bad);background:#ffebe9}.card.bad .value{color:var(--bad)}
.card.warn{border-color:#d4a72c;background:#fff8c5}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line)}
th{font-size:.8rem;color:var(--mute);font-weight:600}
td.num,th.num{text-align:right}
tr.up td:first-child{border-left:6px solid var(--ok)}
tr.down{background:#ffebe9}tr.down td:first-child{border-left:6px solid var(--bad)}
tr.down .state{color:var(--bad);font-weight:700}
tr.starting,tr.restarting{background:#fff8c5}
tr.starting td:first-child,tr.restarting td:first-child{border-left:6px solid #d4a72c}
tr.stopped{color:var(--mute)}
.bar{height:.6rem;background:#eaeef2;border-radius:3px;min-width:3rem;overflow:hidden}
.bar i{display:block;height:100%;background:#0969da}
.share{display:flex;align-items:center;gap:.4rem;justify-content:flex-end;white-space:nowrap}
.share .bar{width:4rem}
.hist{display:grid;grid-template-columns:4.5rem 1fr 4rem;gap:.2rem .5rem;align-items:center;
font-size:.85rem;font-variant-numeric:tabular-nums}
.hist .n{text-align:right}
#key{display:none;gap:.5rem;flex-wrap:wrap;margin:1rem 0}
#key.shown{display:flex}
#key input{flex:1 1 12rem;font:inherit;padding:.35rem}
#key button{font:inherit;padding:.35rem .75rem}
@media (max-width:640px){
 main{padding:.5rem .5rem 2rem}
 table.stack thead{display:none}
 table.stack tr{display:block;border:1px solid var(--line);border-radius:6px;margin:.5rem 0}
 table.stack td{display:flex;justify-content:space-between;border:0;padding:.2rem .6rem}
 table.stack td::before{content:attr(data-label);color:var(--mute);font-size:.8rem}
 table.stack td.num{text-align:right}
}
"""

_SCRIPT = r"""
(() => {
'use strict';
const body = document.body;
const source = body.dataset.source;
const asked = Number(new URLSearchParams(location.search).get('refresh'));
const refresh = Math.min(60, Math.max(0.2, asked || Number(body.dataset.refresh) || 2));
const main = document.getElementById('figures');
const live = document.getElementById('live');
const keyForm = document.getElementById('key');
let apiKey = sessionStorage.getItem('redline-status-key') || '';

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const dash = '\u2013';
const num = (x, digits) => x === null || x === undefined ? dash
  : Number(x).toLocaleString('en-US', {maximumFractionDigits: digits || 0});
function ms(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  const v = seconds * 1000;
  return (v < 1 ? v.toFixed(3) : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0))
    + ' ms';
}
const perSecond = (x) => x === null || x === undefined ? dash
  : el('span', {}, num(x, 1), el('small', {}, ' req/s'));
const pct = (r) => r === null || r === undefined ? dash : (100 * r).toFixed(1) + ' %';
function ago(unix, now) {
  if (unix === null || unix === undefined) return dash;
  const s = Math.max(0, now - unix);
  return s < 60 ? s.toFixed(1) + ' s ago' : Math.round(s / 60) + ' min ago';
}
function card(figure, label, value, sub, level) {
  return el('div', {class: 'card' + (level ? ' ' + level : '')},
    el('div', {class: 'label'}, label),
    el('div', {class: 'value', 'data-figure': figure}, value),
    el('div', {class: 'sub'}, sub || '\u00a0'));
}
function bar(ratio) {
  const width = Math.max(0, Math.min(1, ratio || 0)) * 100;
  return el('div', {class: 'bar'}, el('i', {style: 'width:' + width.toFixed(1) + '%'}));
}
function table(columns, rows, attrs) {
  const head = el('tr', {}, ...columns.map(([label, cls]) => el('th', {class: cls}, label)));
  const lines = rows.map(([rowAttrs, cells]) => el('tr', rowAttrs, ...cells.map((cell, i) =>
    el('td', {class: columns[i][1], 'data-label': columns[i][0]}, cell))));
  return el('table', Object.assign({class: 'stack'}, attrs), el('thead', {}, head),
    el('tbody', {}, ...lines));
}

function drawServer(doc) {
  const r = doc.requests;
  const window = num(doc.window_seconds, 0) + ' s';
  const q = doc.queue;
  const qRatio = q.capacity ? q.depth / q.capacity : 0;
  const lag = doc.event_loop_lag_seconds;
  const models = doc.models || [];
  const parts = [
    el('div', {class: 'cards'},
      card('rate', 'Throughput', perSecond(r.rate), 'last ' + window),
      card('p50', 'Latency p50', ms(r.p50_seconds), 'last ' + window),
      card('p99', 'Latency p99', ms(r.p99_seconds), 'max ' + ms(r.max_seconds)),
      card('errors', 'Errors (5xx)', num(r.errors), num(r.rejected) + ' rejected (4xx)',
        r.errors ? 'bad' : ''),
      card('in-flight', 'In flight', num(r.in_flight),
        el('span', {}, el('span', {'data-figure': 'served'}, num(r.total)), ' served in all')),
      card('queue', models.length > 1 ? 'Batch queues' : 'Batch queue', num(q.depth),
        q.capacity === null ? 'no batcher' : 'of ' + num(q.capacity) + ' (' + pct(qRatio) + ')'
        + (models.length > 1 ? ', ' + models.length + ' models' : ''),
        qRatio >= 0.8 ? 'warn' : ''),
      card('loop-lag', 'Event-loop lag', lag === null ? 'n/a' : ms(lag),
        lag === null ? 'not measured by this server' : 'mean timer delay, last ' + window,
        lag !== null && lag > 0.1 ? 'warn' : '')),
  ];
  parts.push(el('h2', {}, 'Cache'));
  if (!doc.cache.length) {
    parts.push(el('p', {class: 'note'}, 'No cache configured.'));
  } else {
    parts.push(table(
      [['Tier', ''], ['Hit ratio, last ' + window, 'num'], ['Since start', 'num'],
       ['Hits', 'num'], ['Misses', 'num'], ['Entries', 'num']],
      doc.cache.map((t) => [{'data-tier': t.tier}, [t.tier,
        el('span', {'data-figure': 'hit-ratio-' + t.tier}, pct(t.window_hit_ratio)),
        pct(t.hit_ratio), num(t.hits), num(t.misses), num(t.size)]])));
  }
  if (models.length) {
    parts.push(el('h2', {}, models.length > 1 ? 'Models' : 'Model'));
    parts.push(table(
      [['Model', ''], ['Batcher', ''], ['Queue', 'num'], ['Full', 'num'],
       ['Batches, last ' + window, 'num'], ['Mean size', 'num']],
      models.map((x) => {
        const full = x.queue.capacity ? x.queue.depth / x.queue.capacity : 0;
        return [{class: x.alive ? 'up' : 'down', 'data-model': x.name}, [
          x.name + (x.default ? ' (default)' : ''),
          el('span', {class: 'state'}, x.alive ? 'running' : 'down'),
          el('span', {'data-figure': 'queue-' + x.name},
            num(x.queue.depth) + ' / ' + num(x.queue.capacity)),
          el('span', {class: 'share'}, bar(full), pct(full)),
          el('span', {'data-figure': 'batches-' + x.name}, num(x.batches.count)),
          num(x.batches.mean_size, 1)]];
      })));
  }
  const b = doc.batches;
  parts.push(el('h2', {}, 'Batch sizes' + (models.length > 1 ? ', all models' : '')));
  parts.push(el('p', {class: 'note'}, el('span', {'data-figure': 'batches'}, num(b.count)),
    ' batches ' + (b.window ? 'in the last ' + window : 'since start') + ', mean size ',
    el('span', {'data-figure': 'batch-mean'}, num(b.mean_size, 1))));
  const most = Math.max(1, ...b.buckets.map((x) => x.count));
  // buckets past the largest batch seen are left out (at least four are shown)
  let shown = 4;
  b.buckets.forEach((x, i) => { if (x.count) shown = Math.max(shown, i + 1); });
  parts.push(el('div', {class: 'hist', 'data-chart': 'batch-sizes'},
    ...b.buckets.slice(0, shown).flatMap((x) => [
      el('span', {}, x.le === '+Inf' ? 'more' : '\u2264 ' + x.le), bar(x.count / most),
      el('span', {class: 'n'}, num(x.count))])));
  const m = doc.model;
  parts.push(el('p', {class: 'note'}, 'Model: ' + (m.ready ? m.ids.join(', ')
    : (m.error || 'loading')) + ' \u00b7 pid ' + doc.pid + ' \u00b7 up '
    + num(doc.uptime_seconds, 0) + ' s' + (doc.workers > 1 ? ' \u00b7 figures of this worker '
    + 'process only (' + doc.workers + ' workers)' : '')));
  return parts;
}

function drawCluster(doc) {
  const t = doc.totals;
  const window = num(doc.window_seconds, 0) + ' s';
  const parts = [el('div', {class: 'cards'},
    card('up', 'Replicas up', t.up + ' / ' + t.replicas, doc.strategy,
      t.up < t.replicas ? 'bad' : ''),
    card('rate', 'Throughput', perSecond(t.rate), 'last ' + window),
    card('requests', 'Requests served', num(t.requests), 'by the replicas running now'),
    card('restarts', 'Restarts', num(t.restarts), 'all replicas'))];
  parts.push(el('h2', {}, 'Replicas'));
  parts.push(table(
    [['Replica', ''], ['State', ''], ['Last check', ''], ['Restarts', 'num'],
     ['Requests', 'num'], ['req/s', 'num'], ['Share', 'num']],
    doc.replicas.map((x) => [
      {class: x.state, 'data-replica': String(x.index), 'data-state': x.state},
      ['#' + x.index + ' :' + x.port + (x.pid ? ' pid ' + x.pid : ''),
       el('span', {class: 'state'}, x.state),
       x.check + (x.last_check ? ', ' + ago(x.last_check, doc.time) : ''),
       num(x.restarts), num(x.requests), num(x.rate, 1),
       el('span', {class: 'share'}, bar(x.share), pct(x.share))]])));
  parts.push(el('p', {class: 'note'}, 'nginx on ' + doc.listen + ' (pid '
    + (doc.nginx_pid || dash) + ') \u00b7 checks every ' + doc.check_interval + ' s'));
  return parts;
}

async function poll() {
  const headers = apiKey ? {Authorization: 'Bearer ' + apiKey} : {};
  let next = refresh * 1000;
  try {
    const response = await fetch(source, {headers, cache: 'no-store'});
    if (response.status === 401) {
      keyForm.classList.add('shown');
      live.textContent = 'an API key is needed';
      live.className = 'stale';
      return;
    }
    if (!response.ok) throw new Error('HTTP ' + response.status);
    const doc = await response.json();
    document.title = doc.title;
    document.getElementById('title').textContent = doc.title;
    main.replaceChildren(...(doc.kind === 'cluster' ? drawCluster(doc) : drawServer(doc)));
    live.textContent = 'live \u00b7 ' + new Date(doc.time * 1000).toLocaleTimeString()
      + ' \u00b7 every ' + refresh + ' s';
    live.className = '';
    body.dataset.polls = String(Number(body.dataset.polls || 0) + 1);
  } catch (error) {
    live.textContent = 'no answer (' + error.message + '); retrying';
    live.className = 'stale';
    next = Math.max(next, 1000);
  }
  setTimeout(poll, next);
}

keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  apiKey = keyForm.elements.key.value.trim();
  sessionStorage.setItem('redline-status-key', apiKey);
  keyForm.classList.remove('shown');
  poll();
});
poll();
})();
"""


def render_status_page(*, title: str, source: str, refresh: float) -> str:
    """The page, polling *source* (a URL relative to the page) every *refresh* seconds.

    >>> "status.json" in render_status_page(title="t", source="status.json", refresh=2.0)
    True
    """
    if refresh <= 0:
        raise ValueError(f"refresh must be > 0 seconds, got {refresh}")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        # no favicon request: the page asks its server for nothing but its JSON
        '<link rel=icon href="data:,">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body data-source="{html.escape(source)}" data-refresh="{json.dumps(refresh)}">'
        f"<header><h1 id=title>{html.escape(title)}</h1><span id=live>loading…</span></header>"
        "<main><form id=key><input name=key type=password autocomplete=off "
        'placeholder="API key (Bearer)" aria-label="API key"><button>Show</button></form>'
        f"<div id=figures></div></main><script>{_SCRIPT}</script></body></html>\n"
    )
