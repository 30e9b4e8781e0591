// futurnal's dashboard: a small single-page app over the admin listener's JSON API
// (docs/dashboard-api.md). No framework and no build step.
//
// The one rule: every piece of data reaches the page as text. The DOM is built with
// createElement/createTextNode (`el`, `svg` below) and never with innerHTML, so a payload
// string such as <img src=x onerror=alert(1)> shows as those characters. Links are only
// ever http(s) URLs or the page's own routes (`safeHref`). The CSP (script-src 'self',
// style-src 'self') would stop inline script and inline styles anyway: there are none.
'use strict';

(() => {
  const TOKEN_KEY = 'futurnal.admin-token';
  const REFRESH_MS = 1500;
  const PAGE_SIZE = 50;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // ---------------------------------------------------------------- DOM helpers

  /** An element with attributes, listeners (`onclick: fn`) and children (text or nodes). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    appendAll(node, children);
    return node;
  }

  /** The same in the SVG namespace, for the charts. */
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    appendAll(node, children);
    return node;
  }

  function setProps(node, props) {
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = String(value);
      else if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
      else if (name === 'href') {
        const safe = safeHref(value);
        if (safe) node.setAttribute('href', safe);
      } else node.setAttribute(name, value === true ? '' : String(value));
    }
  }

  function appendAll(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  /** A delivery id's first 8 characters (GitHub's ids are UUIDs; the page search takes a beginning). */
  function shortId(id) {
    const text = String(id ?? '');
    return text.length > 9 ? `${text.slice(0, 8)}…` : text;
  }

  /** The page's own routes, and http(s) URLs elsewhere; nothing else becomes a link. */
  function safeHref(value) {
    const text = String(value);
    if (text.startsWith('#')) return text;
    try {
      const url = new URL(text, location.href);
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch {
      return null;
    }
  }

  /** Replaces `node`'s children, skipping null and false as `el` does (replaceChildren
   * would write "null"). */
  function put(node, ...children) {
    node.replaceChildren();
    appendAll(node, children);
    return node;
  }

  const $ = (selector, root = document) => root.querySelector(selector);

  // ---------------------------------------------------------------- Formatting

  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const hourMinuteFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dayHourFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' });
  const numberFormat = new Intl.NumberFormat();

  function utcText(date) {
    return date.toISOString().replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC');
  }

  /** A time in the viewer's zone, with the UTC time on hover. */
  function timeEl(iso) {
    if (!iso) return el('span', { class: 'muted', text: '—' });
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return el('span', { text: iso });
    const today = date.toDateString() === new Date().toDateString();
    return el('time', { datetime: iso, title: utcText(date) }, (today ? timeFormat : dateTimeFormat).format(date));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
    return `${Math.floor(seconds / 86400)} d ${Math.round((seconds % 86400) / 3600)} h`;
  }

  function millis(value) {
    if (value === null || value === undefined) return '—';
    if (value >= 1000) return `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)} s`;
    if (value >= 10 || value === 0) return `${Math.round(value)} ms`;
    return `${value.toFixed(1)} ms`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
  }

  const dash = (value) => (value === null || value === undefined || value === '' ? '—' : String(value));
  const shortSha = (sha) => (sha ? String(sha).slice(0, 7) : '—');

  const BADGE_CLASSES = new Set([
    'queued', 'processing', 'retrying', 'done', 'ignored', 'dead', 'webhook', 'polling', 'open', 'closed',
    'merged', 'draft', 'upsert', 'delete', 'retry', 'ok', 'bad', 'warn', 'info', 'neutral', 'active', 'duplicate',
  ]);

  function badge(text, kind) {
    const cls = BADGE_CLASSES.has(kind || text) ? kind || text : 'neutral';
    return el('span', { class: `badge ${cls}`, text });
  }

  function labelChips(labels) {
    if (!Array.isArray(labels) || labels.length === 0) return null;
    return labels.map((label) => el('span', { class: 'label-chip', text: typeof label === 'string' ? label : dash(label && label.name) }));
  }

  /** Whether `data` differs from what was last rendered under `key` (and remembers it). */
  function changed(memo, key, data) {
    const text = JSON.stringify(data);
    if (memo[key] === text) return false;
    memo[key] = text;
    return true;
  }

  // ---------------------------------------------------------------- The API

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  let csrfToken = null;
  let tokenPrompt = null;

  async function getCsrf() {
    if (!csrfToken) {
      const answer = await api('/api/csrf');
      csrfToken = answer.token;
    }
    return csrfToken;
  }

  /** GET (or POST, with the CSRF token) `path`; asks for the admin token on a 401. */
  async function api(path, options = {}) {
    const method = options.method || 'GET';
    let refreshedCsrf = false;
    for (;;) {
      const headers = { Accept: 'application/json' };
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      if (method !== 'GET') headers['x-futurnal-csrf'] = await getCsrf();
      let response;
      try {
        response = await fetch(path, { method, headers, cache: 'no-store', credentials: 'same-origin', signal: options.signal });
      } catch (e) {
        if (e && e.name === 'AbortError') throw e;
        live.failed();
        throw new ApiError(0, 'the daemon does not answer');
      }
      if (response.status === 401) {
        await askForToken(Boolean(token));
        continue;
      }
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      const message = body && typeof body.error === 'string' ? body.error : `${response.status} ${response.statusText}`;
      // A restarted daemon has a new CSRF token: fetch it once and try again.
      if (response.status === 403 && method !== 'GET' && !refreshedCsrf && /csrf/i.test(message)) {
        csrfToken = null;
        refreshedCsrf = true;
        continue;
      }
      live.succeeded();
      if (!response.ok) throw new ApiError(response.status, message, body);
      return body;
    }
  }

  /** The admin token form, once for however many requests were refused. */
  function askForToken(refused) {
    if (tokenPrompt) return tokenPrompt;
    if (refused) sessionStorage.removeItem(TOKEN_KEY);
    const indicator = $('#live');
    if (indicator) {
      indicator.className = 'live off';
      indicator.textContent = 'waiting for the admin token';
    }
    tokenPrompt = new Promise((resolve) => {
      const input = el('input', { type: 'password', id: 'token-input', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true });
      const dialog = el('dialog', { id: 'token-dialog', 'aria-labelledby': 'token-title' });
      const form = el('form', {
        class: 'token-form',
        onsubmit: (event) => {
          event.preventDefault();
          const value = input.value.trim();
          if (!value) return;
          sessionStorage.setItem(TOKEN_KEY, value);
          input.value = '';
          dialog.close();
          dialog.remove();
          tokenPrompt = null;
          resolve();
        },
      },
      el('h2', { id: 'token-title', text: 'Admin token' }),
      refused ? el('p', { class: 'notice error', text: 'That token was refused. Try again.' }) : null,
      el('p', { text: 'This admin listener needs its token (admin_token in the config, or FUTURNAL_ADMIN_TOKEN). It is kept in this tab only, until the tab is closed.' }),
      el('label', { for: 'token-input', text: 'Token' }),
      input,
      el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary', id: 'token-submit', text: 'Use this token' })));
      dialog.append(form);
      // The page is of no use without it: Escape does not dismiss the form.
      dialog.addEventListener('cancel', (event) => event.preventDefault());
      document.body.append(dialog);
      dialog.showModal();
      input.focus();
    });
    return tokenPrompt;
  }

  // ---------------------------------------------------------------- Live indicator

  const live = {
    lastOk: null,
    failing: false,
    succeeded() {
      this.lastOk = new Date();
      this.failing = false;
      this.show();
    },
    failed() {
      this.failing = true;
      this.show();
    },
    show() {
      const node = $('#live');
      if (!node) return;
      if (this.failing) {
        node.className = 'live off';
        node.textContent = 'offline: the daemon does not answer, retrying';
      } else if (this.lastOk) {
        node.className = 'live on';
        node.textContent = `live · updated ${timeFormat.format(this.lastOk)}`;
      }
    },
  };

  // ---------------------------------------------------------------- Dialog, toasts, actions

  /** Asks in the page's own dialog; resolves to whether the user confirmed. */
  function confirmDialog(title, body, confirmLabel) {
    const dialog = $('#confirm');
    $('#confirm-title').textContent = title;
    $('#confirm-body').textContent = body;
    $('#confirm-ok').textContent = confirmLabel;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
      $('#confirm-ok').focus();
    });
  }

  function toast(message, kind) {
    const node = el('div', { class: `toast ${kind || ''}`, role: kind === 'error' ? 'alert' : 'status' },
      el('p', { text: message }),
      el('button', { type: 'button', 'aria-label': 'Dismiss', text: '×', onclick: () => node.remove() }));
    const toasts = $('#toasts');
    toasts.append(node);
    // The newest three: older results give way rather than pile up over the page.
    while (toasts.children.length > 3) toasts.firstElementChild.remove();
    setTimeout(() => node.remove(), kind === 'error' ? 15000 : 8000);
  }

  /** Confirm, POST, show the result, refresh the view. */
  async function runAction(button, { title, body, confirmLabel, path, result }) {
    if (!(await confirmDialog(title, body, confirmLabel))) return;
    const wasDisabled = button.disabled;
    button.disabled = true;
    try {
      const answer = await api(path, { method: 'POST' });
      toast(result(answer || {}));
    } catch (e) {
      toast(`${title} — ${e.message}`, 'error');
    } finally {
      button.disabled = wasDisabled;
      button.focus();
    }
    refreshNow();
  }

  // ---------------------------------------------------------------- Shared data

  let meta = { githubWebUrl: 'https://github.com' };
  let repositoriesCache = null;

  async function repositories() {
    repositoriesCache = await api('/api/repositories');
    return repositoriesCache;
  }

  function githubBase(repo) {
    if (repo && repo.html_url && safeHref(repo.html_url) && /^https?:/.test(repo.html_url)) return repo.html_url.replace(/\/+$/, '');
    const name = typeof repo === 'string' ? repo : repo && repo.repository;
    return `${meta.githubWebUrl.replace(/\/+$/, '')}/${String(name || '').split('/').map(encodeURIComponent).join('/')}`;
  }

  const encodePath = (text) => String(text).split('/').map(encodeURIComponent).join('/');

  function githubLink(url, text, label) {
    return el('a', { href: url, rel: 'noreferrer noopener', target: '_blank', title: label || 'Open on GitHub', text });
  }

  // ---------------------------------------------------------------- Views

  const main = () => $('#main');
  let view = null;
  let feedGeneration = 0;

  function errorNotice(root) {
    let node = $('#view-error', root);
    if (!node) {
      node = el('div', { id: 'view-error', class: 'notice error', role: 'alert', hidden: true });
      root.prepend(node);
    }
    return node;
  }

  function showError(e) {
    const node = errorNotice(main());
    node.hidden = false;
    node.textContent = e.status === 404 && e.message.startsWith('404')
      ? 'This daemon does not serve that part of the API yet (404).'
      : `Could not load: ${e.message}`;
  }

  function clearError() {
    const node = $('#view-error', main());
    if (node) node.hidden = true;
  }

  function heading(title, ...extra) {
    return el('div', { class: 'header-row' }, el('h1', { text: title }), extra.length ? el('div', { class: 'toolbar' }, extra) : null);
  }

  function table(headers, rows, emptyText) {
    if (rows.length === 0) return el('div', { class: 'table-wrap' }, el('p', { class: 'empty', text: emptyText }));
    return el('div', { class: 'table-wrap' },
      el('table', null,
        el('thead', null, el('tr', null, headers.map((h) => el('th', { class: h.cls || null, scope: 'col', text: h.text || h })))),
        el('tbody', null, rows)));
  }

  // ---- Overview

  const RECEIVED = [
    ['queued', 'queued'], ['duplicate', 'duplicate'], ['ignored', 'ignored'], ['refused', 'refused'], ['rate_limited', 'rate limited'],
  ];
  const PROCESSED = [['done', 'done'], ['retry', 'retry'], ['dead', 'dead']];
  const PERCENTILES = [['p50', 'p50'], ['p99', 'p99']];

  function mountOverview(root) {
    const memo = {};
    let data = null;
    let range = sessionStorage.getItem('futurnal.range') === 'day' ? 'day' : 'hour';
    const cards = el('div', { class: 'cards', id: 'overview-cards' });
    const charts = el('div', { class: 'charts', id: 'charts' });
    const instances = el('div', { id: 'instances' });
    const rangeButtons = [['hour', 'Last hour'], ['day', 'Last day']].map(([key, text]) => el('button', {
      type: 'button', 'data-range': key, 'aria-pressed': String(range === key), text,
      onclick: () => {
        range = key;
        sessionStorage.setItem('futurnal.range', key);
        rangeButtons.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.range === key)));
        drawCharts();
      },
    }));
    put(root,
      heading('Overview'),
      cards,
      el('div', { class: 'header-row' }, el('h2', { text: 'Traffic' }), el('div', { class: 'segmented', role: 'group', 'aria-label': 'Time range' }, rangeButtons)),
      charts,
      el('h2', { text: 'Instances' }),
      instances,
    );
    let drawnWidth = 0;
    const resize = new ResizeObserver(() => {
      const width = charts.clientWidth;
      if (data && Math.abs(width - drawnWidth) > 4) drawCharts();
    });
    resize.observe(charts);

    function drawCards() {
      const { health, queue } = data;
      const hour = (data.charts && data.charts.hour && data.charts.hour.buckets) || [];
      const sum = (buckets, group, key) => buckets.reduce((a, b) => a + ((b[group] && b[group][key]) || 0), 0);
      const received = RECEIVED.reduce((a, [key]) => a + sum(hour, 'received', key), 0);
      const healthy = health.status === 'ok';
      put(cards,
        card('Health', badge(dash(health.status), healthy ? 'ok' : 'bad'), `database ${dash(health.database)}`),
        card('Role', dash(health.role), [`instance ${dash(health.instance)} · `, health.leader ? 'leader' : 'not leading']),
        card('Queue', numberFormat.format(queue.depth || 0), `of ${numberFormat.format(queue.cap || 0)} · oldest ${queue.depth ? duration(queue.oldest_age_seconds) : '—'}`),
        card('Last hour', numberFormat.format(received), `received · ${sum(hour, 'processed', 'done')} done · ${sum(hour, 'processed', 'retry')} retried · ${sum(hour, 'processed', 'dead')} dead`),
      );
    }

    function card(label, value, sub) {
      return el('div', { class: 'card' }, el('div', { class: 'label', text: label }), el('div', { class: 'value' }, value), el('div', { class: 'sub' }, sub));
    }

    function drawInstances() {
      const list = data.health.instances || [];
      put(instances, table(
        ['Instance', 'Role', 'Leader', { text: 'Version', cls: 'hide-narrow' }, { text: 'Started', cls: 'hide-narrow' }, 'Last seen'],
        list.map((i) => el('tr', null,
          el('td', null, dash(i.name), i.name === data.health.instance ? el('span', { class: 'muted', text: ' (this one)' }) : null),
          el('td', { text: dash(i.role) }),
          el('td', null, i.leader ? badge('leader', 'ok') : '—'),
          el('td', { class: 'hide-narrow', text: dash(i.version) }),
          el('td', { class: 'hide-narrow' }, timeEl(i.started_at)),
          el('td', null, timeEl(i.seen_at)))),
        'No instance has reported in the last minute.'));
    }

    function drawCharts() {
      if (!data || !data.charts) return;
      const series = data.charts[range] || { buckets: [], bucket_seconds: 60 };
      const buckets = series.buckets || [];
      const per = series.bucket_seconds >= 3600 ? 'per hour' : 'per minute';
      // Two charts a row on a wide screen, one on a phone: each drawn at its real width.
      const columns = getComputedStyle(charts).gridTemplateColumns.split(' ').length || 1;
      drawnWidth = charts.clientWidth;
      const width = Math.max(240, Math.floor((drawnWidth - (columns - 1) * 13) / columns) - 28);
      put(charts,
        chartBox('chart-received', 'Deliveries received', per, stackedBars(buckets, series.bucket_seconds, width, 'received', RECEIVED)),
        chartBox('chart-processed', 'Processing results', per, stackedBars(buckets, series.bucket_seconds, width, 'processed', PROCESSED)),
        chartBox('chart-ack', 'Acknowledgement latency', 'receipt → 2xx sent', latencyLines(buckets, series.bucket_seconds, width, 'ack_ms')),
        chartBox('chart-queryable', 'Push to queryable', 'receipt → its changes stored', latencyLines(buckets, series.bucket_seconds, width, 'queryable_ms')),
      );
    }

    return {
      title: 'Overview',
      async refresh() {
        const answer = await api('/api/overview');
        if (answer && answer.github_web_url) meta.githubWebUrl = answer.github_web_url;
        data = answer;
        // Each part is drawn again only when what it shows changed.
        if (changed(memo, 'cards', [answer.health, answer.queue, answer.charts && answer.charts.hour])) drawCards();
        if (changed(memo, 'charts', answer.charts)) drawCharts();
        if (changed(memo, 'instances', answer.health)) drawInstances();
      },
      dispose() {
        resize.disconnect();
      },
    };
  }

  function chartBox(id, title, subtitle, parts) {
    return el('figure', { class: 'chart', id, 'data-chart': id },
      el('h3', null, title, el('span', { class: 'muted', text: ` · ${subtitle}` })),
      el('div', { class: 'plot' }, parts.svg),
      parts.legend);
  }

  function niceMax(value, integer) {
    if (!(value > 0)) return integer ? 4 : 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 4, 5, 10]) {
      const candidate = m * power;
      if (candidate >= value && (!integer || Number.isInteger(candidate / 2))) return candidate;
    }
    return 10 * power;
  }

  function bucketLabel(iso, bucketSeconds) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return '';
    return (bucketSeconds >= 3600 ? dayHourFormat : hourMinuteFormat).format(date);
  }

  /** The axes of a chart: grid lines, y labels, three x labels; and its scales. */
  function chartFrame(buckets, bucketSeconds, width, yMax, yFormat, label) {
    const height = 170;
    const m = { left: 50, right: 10, top: 10, bottom: 24 };
    const plotWidth = width - m.left - m.right;
    const plotHeight = height - m.top - m.bottom;
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': label });
    for (const f of [0, 0.5, 1]) {
      const y = m.top + plotHeight * (1 - f);
      root.append(
        svg('line', { x1: m.left, x2: m.left + plotWidth, y1: y, y2: y, class: 'grid' }),
        svg('text', { x: m.left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }, yFormat(f * yMax)),
      );
    }
    const n = Math.max(1, buckets.length);
    const band = plotWidth / n;
    const x = (i) => m.left + band * (i + 0.5);
    const y = (v) => m.top + plotHeight * (1 - Math.min(v, yMax) / yMax);
    const ticks = [...new Set([0, Math.floor((buckets.length - 1) / 2), buckets.length - 1])].filter((i) => i >= 0);
    for (const i of ticks) {
      const anchor = i === 0 && ticks.length > 1 ? 'start' : i === buckets.length - 1 && ticks.length > 1 ? 'end' : 'middle';
      const tx = anchor === 'start' ? m.left : anchor === 'end' ? m.left + plotWidth : x(i);
      root.append(svg('text', { x: tx, y: height - 6, 'text-anchor': anchor, class: 'axis' }, bucketLabel(buckets[i].at, bucketSeconds)));
    }
    return { root, m, plotWidth, plotHeight, band, x, y, height };
  }

  function hitArea(frame, i, lines) {
    return svg('rect', {
      x: frame.m.left + frame.band * i, y: frame.m.top, width: Math.max(1, frame.band), height: frame.plotHeight, class: 'hit',
    }, svg('title', null, lines.join('\n')));
  }

  function legend(entries) {
    return el('ul', { class: 'legend' }, entries.map(([key, text, value, line]) => el('li', null,
      el('span', { class: `swatch ${line ? 'line ' : ''}s-${key}`, 'aria-hidden': 'true' }), `${text} ${value}`)));
  }

  /** Counts per bucket, stacked by outcome. */
  function stackedBars(buckets, bucketSeconds, width, group, series) {
    const value = (b, key) => Number((b[group] && b[group][key]) || 0);
    const totals = buckets.map((b) => series.reduce((a, [key]) => a + value(b, key), 0));
    const yMax = niceMax(Math.max(0, ...totals), true);
    const all = totals.reduce((a, b) => a + b, 0);
    const label = `${group === 'received' ? 'Deliveries received' : 'Processing results'}: ${all} in ${buckets.length} buckets`;
    const frame = chartFrame(buckets, bucketSeconds, width, yMax, (v) => numberFormat.format(Math.round(v)), label);
    const barWidth = Math.max(1, Math.min(frame.band * 0.78, 30));
    buckets.forEach((b, i) => {
      let stacked = 0;
      for (const [key] of series) {
        const v = value(b, key);
        if (v <= 0) continue;
        const top = frame.y(stacked + v);
        const bottom = frame.y(stacked);
        frame.root.append(svg('rect', {
          x: frame.x(i) - barWidth / 2, y: top, width: barWidth, height: Math.max(1, bottom - top), class: `bar s-${key}`, 'data-series': key,
        }));
        stacked += v;
      }
      frame.root.append(hitArea(frame, i, [bucketLabel(b.at, bucketSeconds), ...series.map(([key, text]) => `${text}: ${value(b, key)}`)]));
    });
    if (all === 0) {
      frame.root.append(svg('text', { x: frame.m.left + frame.plotWidth / 2, y: frame.m.top + frame.plotHeight / 2, 'text-anchor': 'middle', class: 'empty-note' }, 'nothing in this period'));
    }
    const sums = series.map(([key, text]) => [key, text, numberFormat.format(buckets.reduce((a, b) => a + value(b, key), 0)), false]);
    return { svg: frame.root, legend: legend(sums) };
  }

  /** p50 and p99 per bucket as lines, broken where a bucket had no sample. */
  function latencyLines(buckets, bucketSeconds, width, group) {
    const value = (b, key) => {
      const v = b[group] && b[group][key];
      return typeof v === 'number' ? v : null;
    };
    const values = buckets.flatMap((b) => PERCENTILES.map(([key]) => value(b, key))).filter((v) => v !== null);
    const yMax = niceMax(Math.max(0, ...values), false);
    const label = `${group === 'ack_ms' ? 'Acknowledgement latency' : 'Push to queryable'}: p50 and p99`;
    const frame = chartFrame(buckets, bucketSeconds, width, yMax, millis, label);
    const latest = {};
    for (const [key] of PERCENTILES) {
      let d = '';
      let pen = false;
      buckets.forEach((b, i) => {
        const v = value(b, key);
        if (v === null) {
          pen = false;
          return;
        }
        latest[key] = v;
        d += `${pen ? 'L' : 'M'}${frame.x(i).toFixed(1)} ${frame.y(v).toFixed(1)} `;
        pen = true;
        const alone = (i === 0 || value(buckets[i - 1], key) === null) && (i === buckets.length - 1 || value(buckets[i + 1], key) === null);
        if (alone || buckets.length <= 24) frame.root.append(svg('circle', { cx: frame.x(i), cy: frame.y(v), r: 2.6, class: `dot s-${key}` }));
      });
      if (d) frame.root.append(svg('path', { d: d.trim(), class: `series-line s-${key}`, 'data-series': key }));
    }
    buckets.forEach((b, i) => frame.root.append(hitArea(frame, i, [bucketLabel(b.at, bucketSeconds), ...PERCENTILES.map(([key, text]) => `${text}: ${millis(value(b, key))}`)])));
    if (values.length === 0) {
      frame.root.append(svg('text', { x: frame.m.left + frame.plotWidth / 2, y: frame.m.top + frame.plotHeight / 2, 'text-anchor': 'middle', class: 'empty-note' }, 'no samples in this period'));
    }
    return { svg: frame.root, legend: legend(PERCENTILES.map(([key, text]) => [key, text, `latest ${millis(latest[key] === undefined ? null : latest[key])}`, true])) };
  }

  // ---- Repositories

  function mountRepositories(root) {
    const list = el('div', { id: 'repositories' });
    const cards = new Map();
    put(root, heading('Repositories'), list);

    function cardFor(repo) {
      let entry = cards.get(repo.id);
      if (entry) return entry;
      const title = el('h2');
      const mode = el('span');
      const reason = el('p', { class: 'muted' });
      const fields = el('dl', { class: 'fields' });
      const action = (text, name, describe) => el('button', {
        type: 'button', 'data-action': name, text,
        onclick: (event) => runAction(event.currentTarget, describe(entry.repo)),
      });
      const ping = action('Ping hook', 'ping', (r) => ({
        title: 'Ping hook', confirmLabel: 'Ping',
        body: `Ask GitHub to send a ping to ${r.repository}'s hook${r.hook_id ? ` (${r.hook_id})` : ''}?`,
        path: `/api/repositories/${r.id}/ping`,
        result: () => `${r.repository}: GitHub was asked for a ping.`,
      }));
      const catchUp = action('Run catch-up', 'catch-up', (r) => ({
        title: 'Run catch-up', confirmLabel: 'Run catch-up',
        body: `Read ${r.repository}'s delivery log on GitHub and have GitHub redeliver what never reached this daemon?`,
        path: `/api/repositories/${r.id}/catch-up`,
        result: (a) => `${r.repository}: catch-up done, ${a.redelivered ?? 0} redelivered.`,
      }));
      const buttons = el('div', { class: 'toolbar' },
        action('Sync now', 'sync', (r) => ({
          title: 'Sync now', confirmLabel: 'Sync',
          body: `Fetch ${r.repository}'s tracked branches and tags from its remote now and record what changed?`,
          path: `/api/repositories/${r.id}/sync`,
          result: (a) => `${r.repository}: synced, ${a.changes ?? 0} changes recorded.`,
        })),
        ping,
        catchUp,
        el('a', { class: 'button', href: `#/deliveries?repository=${encodeURIComponent(repo.repository)}`, text: 'Deliveries' }),
        el('a', { class: 'button', href: `#/copy/${repo.id}`, text: 'Local copy' }));
      const node = el('section', { class: 'panel repository', 'data-repository': repo.repository },
        el('div', { class: 'header-row' }, el('div', { class: 'toolbar' }, title, mode), buttons), reason, fields);
      entry = { node, title, mode, reason, fields, repo, memo: {}, hookActions: [ping, catchUp] };
      cards.set(repo.id, entry);
      return entry;
    }

    function field(name, ...value) {
      return el('div', null, el('dt', { text: name }), el('dd', null, value));
    }

    function fill(entry, repo) {
      entry.repo = repo;
      if (!changed(entry.memo, 'repo', repo)) return;
      put(entry.title, githubLink(githubBase(repo), repo.repository));
      put(entry.mode, badge(dash(repo.mode), repo.mode));
      entry.reason.textContent = repo.mode_reason || '';
      // Ping and catch-up ask GitHub about the hook: without one there is nothing to ask.
      for (const button of entry.hookActions) {
        button.disabled = !repo.hook_id;
        if (repo.hook_id) button.removeAttribute('title');
        else button.title = `Needs a webhook: futurnal sources github webhook enable ${repo.repository}`;
      }
      const response = repo.last_response;
      put(entry.fields,
        field('Hook', repo.hook_id ? String(repo.hook_id) : 'none'),
        field('Hook URL', repo.url ? el('span', { class: 'mono', text: repo.url }) : '—'),
        field('Active on GitHub', repo.active === null || repo.active === undefined ? '—' : repo.active ? 'yes' : 'no'),
        field('Last ping', timeEl(repo.last_ping_at)),
        field('Last delivery', timeEl(repo.last_delivery_at)),
        field("GitHub's last response", response ? `${dash(response.code)} ${dash(response.status)}${response.message ? ` · ${response.message}` : ''}` : '—'),
        field('Failures', numberFormat.format(repo.failures || 0)),
        field('Queue depth', numberFormat.format(repo.queue_depth || 0)),
        field('Polling watermark', timeEl(repo.poll_watermark)),
        field('Mirror size', bytes(repo.mirror_bytes)),
        field('Last sync', timeEl(repo.last_sync_at)),
        field('Branches tracked', Array.isArray(repo.branches) && repo.branches.length
          ? repo.branches.map((b) => el('code', { class: 'label-chip', text: b }))
          : ['the default branch', repo.default_branch ? [' (', el('code', { text: repo.default_branch }), ')'] : null]),
      );
    }

    return {
      title: 'Repositories',
      async refresh() {
        const repos = await repositories();
        const seen = new Set();
        const nodes = repos.map((repo) => {
          seen.add(repo.id);
          const entry = cardFor(repo);
          fill(entry, repo);
          return entry.node;
        });
        for (const id of [...cards.keys()]) if (!seen.has(id)) cards.delete(id);
        if (nodes.length === 0) {
          put(list, el('p', { class: 'notice', text: 'No repository is tracked yet: futurnal sources github add OWNER/NAME.' }));
        } else if (nodes.some((n, i) => list.children[i] !== n) || list.children.length !== nodes.length) {
          put(list, ...nodes);
        }
      },
    };
  }

  // ---- Deliveries

  const STATUSES = ['queued', 'processing', 'retrying', 'done', 'ignored', 'dead'];
  const EVENTS = ['push', 'create', 'delete', 'pull_request', 'pull_request_review', 'pull_request_review_comment', 'issues', 'issue_comment', 'release', 'label', 'milestone', 'repository', 'ping'];
  const RANGES = [['', 'Any time'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['custom', 'Between…']];
  const RANGE_SECONDS = { '1h': 3600, '24h': 86400, '7d': 7 * 86400 };

  function toLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fromLocalInput(value) {
    if (!value) return '';
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString().replace(/\.\d+Z$/, 'Z');
  }

  function mountDeliveries(root, params) {
    const filters = {};
    for (const key of ['repository', 'event', 'action', 'status', 'range', 'since', 'until', 'q']) filters[key] = params.get(key) || '';
    const memo = {};
    let pages = [''];
    let hasOlder = false;
    let lastRows = [];

    const repoSelect = el('select', { id: 'filter-repository', name: 'repository' }, el('option', { value: '', text: 'Any' }));
    const eventInput = el('input', { id: 'filter-event', name: 'event', list: 'event-names', placeholder: 'any', autocomplete: 'off' });
    const actionInput = el('input', { id: 'filter-action', name: 'action', placeholder: 'any', autocomplete: 'off' });
    const statusSelect = el('select', { id: 'filter-status', name: 'status' }, el('option', { value: '', text: 'Any' }), STATUSES.map((s) => el('option', { value: s, text: s })));
    const rangeSelect = el('select', { id: 'filter-range', name: 'range' }, RANGES.map(([value, text]) => el('option', { value, text })));
    const sinceInput = el('input', { id: 'filter-since', name: 'since', type: 'datetime-local' });
    const untilInput = el('input', { id: 'filter-until', name: 'until', type: 'datetime-local' });
    const searchInput = el('input', { id: 'filter-q', name: 'q', type: 'search', placeholder: 'id or its beginning', autocomplete: 'off', spellcheck: 'false' });
    const sinceLabel = el('label', null, 'Received after', sinceInput);
    const untilLabel = el('label', null, 'Received before', untilInput);
    eventInput.value = filters.event;
    actionInput.value = filters.action;
    statusSelect.value = filters.status;
    rangeSelect.value = filters.range || (filters.since || filters.until ? 'custom' : '');
    sinceInput.value = toLocalInput(filters.since);
    untilInput.value = toLocalInput(filters.until);
    searchInput.value = filters.q;

    const list = el('div', { id: 'deliveries-list' });
    const pageInfo = el('span', { class: 'muted', id: 'page-info' });
    const newer = el('button', { type: 'button', id: 'page-newer', text: '← Newer', onclick: () => { pages.pop(); load(); } });
    const older = el('button', { type: 'button', id: 'page-older', text: 'Older →', onclick: () => { pages.push(lastRows[lastRows.length - 1].delivery_id); load(); } });
    const newest = el('button', { type: 'button', id: 'page-newest', text: 'Newest', onclick: () => { pages = ['']; load(); } });
    const replayAll = el('button', { type: 'button', id: 'replay-all', class: 'danger', onclick: (event) => bulkReplay(event.currentTarget) });
    const clear = el('button', {
      type: 'button', id: 'filters-clear', text: 'Clear filters',
      onclick: () => {
        for (const key of Object.keys(filters)) filters[key] = '';
        for (const input of [repoSelect, eventInput, actionInput, statusSelect, rangeSelect, sinceInput, untilInput, searchInput]) input.value = '';
        applyFilters();
      },
    });

    const form = el('form', { class: 'panel filters', id: 'delivery-filters', role: 'search', onsubmit: (e) => { e.preventDefault(); readForm(); } },
      el('label', null, 'Repository', repoSelect),
      el('label', null, 'Event', eventInput),
      el('datalist', { id: 'event-names' }, EVENTS.map((e) => el('option', { value: e }))),
      el('label', null, 'Action', actionInput),
      el('label', null, 'Status', statusSelect),
      el('label', null, 'Time', rangeSelect),
      sinceLabel,
      untilLabel,
      el('label', { class: 'wide' }, 'Delivery id', searchInput),
      el('div', { class: 'toolbar' }, el('button', { type: 'submit', class: 'primary', text: 'Apply' }), clear));

    put(root, heading('Deliveries', replayAll), form, list, el('div', { class: 'pager' }, newest, newer, older, pageInfo));

    function showRangeInputs() {
      const custom = rangeSelect.value === 'custom';
      sinceLabel.hidden = !custom;
      untilLabel.hidden = !custom;
    }
    showRangeInputs();

    function replayScope() {
      return filters.status === 'done' ? 'done' : 'dead';
    }

    function labelReplay() {
      const scope = replayScope();
      replayAll.textContent = `Replay all ${scope}${filters.repository || filters.event ? ' (filtered)' : ''}…`;
    }
    labelReplay();

    let typing = null;
    const readSoon = () => {
      clearTimeout(typing);
      typing = setTimeout(readForm, 350);
    };
    for (const input of [eventInput, actionInput, searchInput]) input.addEventListener('input', readSoon);
    for (const input of [repoSelect, statusSelect, sinceInput, untilInput]) input.addEventListener('change', readForm);
    rangeSelect.addEventListener('change', () => {
      showRangeInputs();
      readForm();
    });

    function readForm() {
      clearTimeout(typing);
      filters.repository = repoSelect.value;
      filters.event = eventInput.value.trim();
      filters.action = actionInput.value.trim();
      filters.status = statusSelect.value;
      filters.range = rangeSelect.value === 'custom' ? '' : rangeSelect.value;
      filters.since = rangeSelect.value === 'custom' ? fromLocalInput(sinceInput.value) : '';
      filters.until = rangeSelect.value === 'custom' ? fromLocalInput(untilInput.value) : '';
      filters.q = searchInput.value.trim();
      applyFilters();
    }

    function applyFilters() {
      showRangeInputs();
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
      const hash = `#/deliveries${query.toString() ? `?${query}` : ''}`;
      // The address follows the filters (to share or bookmark) without re-mounting the view.
      history.replaceState(null, '', hash);
      pages = [''];
      labelReplay();
      load();
    }

    function apiQuery(before) {
      const query = new URLSearchParams();
      for (const key of ['repository', 'event', 'action', 'status', 'q']) if (filters[key]) query.set(key, filters[key]);
      if (filters.range && RANGE_SECONDS[filters.range]) {
        query.set('since', new Date(Date.now() - RANGE_SECONDS[filters.range] * 1000).toISOString().replace(/\.\d+Z$/, 'Z'));
      } else {
        if (filters.since) query.set('since', filters.since);
        if (filters.until) query.set('until', filters.until);
      }
      query.set('limit', String(PAGE_SIZE + 1));
      if (before) query.set('before', before);
      return query;
    }

    async function bulkReplay(button) {
      const scope = replayScope();
      // The same filters as the list (the server narrows the replay by each of them).
      const query = apiQuery('');
      query.delete('limit');
      query.set('status', scope);
      const narrowed = ['action', 'range', 'since', 'until', 'q'].some((k) => filters[k]);
      const what = [`every ${scope} delivery`, filters.repository ? ` of ${filters.repository}` : ' of every repository', filters.event ? ` with event ${filters.event}` : '', narrowed ? ' that the other filters shown select' : ''].join('');
      await runAction(button, {
        title: `Replay all ${scope}`,
        confirmLabel: 'Replay',
        body: `Process ${what} again, in the order they arrived?`,
        path: `/api/deliveries/replay?${query}`,
        result: (a) => `${a.replayed ?? 0} ${scope} deliveries queued again.`,
      });
    }

    function row(d) {
      const link = (text, cls) => el('a', {
        class: cls, href: `#/deliveries/${encodeURIComponent(d.delivery_id)}`, title: d.delivery_id, 'aria-label': `delivery ${d.delivery_id}`, text,
      });
      return el('tr', { 'data-delivery': d.delivery_id, 'data-status': d.status },
        el('td', { class: 'nowrap' }, timeEl(d.received_at)),
        // The id's first 8 characters (as GitHub's own list shows them; the search takes a
        // beginning), the whole id on hover and for a screen reader: the row then fits 1280 px.
        el('td', { class: 'id hide-narrow' }, link(shortId(d.delivery_id))),
        // On a phone the id column gives way and the event is the link (only one of the
        // two is ever displayed, so one tab stop).
        el('td', null, el('span', { class: 'hide-narrow', text: dash(d.event) }), link(dash(d.event), 'show-narrow')),
        el('td', { class: 'hide-narrow', text: dash(d.action) }),
        el('td', { text: dash(d.repository) }),
        el('td', null, badge(dash(d.status), d.status)),
        el('td', { class: 'num hide-narrow', text: String(d.attempts ?? 0) }),
        el('td', { class: 'hide-narrow', text: dash(d.worker) }),
        // An ignored delivery's "error" is the reason nothing was done, not a failure.
        el('td', { class: `${d.status === 'ignored' ? 'reason' : 'error'} hide-narrow` }, d.last_error ? el('div', { class: 'clamp', title: d.last_error, text: d.last_error }) : null));
    }

    let loads = 0;
    async function load() {
      // Filters change while a page is on its way: only the latest answer is shown.
      const mine = ++loads;
      const before = pages[pages.length - 1];
      const rows = await api(`/api/deliveries?${apiQuery(before)}`);
      if (view !== self || mine !== loads) return;
      hasOlder = rows.length > PAGE_SIZE;
      lastRows = rows.slice(0, PAGE_SIZE);
      newer.disabled = pages.length <= 1;
      newest.disabled = pages.length <= 1;
      older.disabled = !hasOlder;
      const first = (pages.length - 1) * PAGE_SIZE;
      pageInfo.textContent = lastRows.length ? `page ${pages.length} · ${first + 1}–${first + lastRows.length}${hasOlder ? '' : ' (the oldest)'}` : '';
      if (!changed(memo, 'rows', lastRows)) return;
      put(list, table(
        ['Received', { text: 'Delivery', cls: 'hide-narrow' }, 'Event', { text: 'Action', cls: 'hide-narrow' }, 'Repository', 'Status', { text: 'Attempts', cls: 'num hide-narrow' }, { text: 'Worker', cls: 'hide-narrow' }, { text: 'Error', cls: 'hide-narrow' }],
        lastRows.map(row),
        pages.length > 1 ? 'No older deliveries.' : 'No delivery matches these filters.'));
    }

    async function loadRepositories() {
      const repos = await repositories();
      if (!changed(memo, 'repos', repos.map((r) => r.repository))) return;
      const names = repos.map((r) => r.repository);
      if (filters.repository && !names.includes(filters.repository)) names.push(filters.repository);
      put(repoSelect, el('option', { value: '', text: 'Any' }), names.map((n) => el('option', { value: n, text: n })));
      repoSelect.value = filters.repository;
    }

    const self = {
      title: 'Deliveries',
      async refresh() {
        await Promise.all([loadRepositories(), load()]);
      },
    };
    return self;
  }

  // ---- One delivery

  function jsonValue(value) {
    if (value === null) return el('span', { class: 'lit', text: 'null' });
    if (typeof value === 'string') return el('span', { class: 'str', text: JSON.stringify(value) });
    if (typeof value === 'number') return el('span', { class: 'num', text: String(value) });
    if (typeof value === 'boolean') return el('span', { class: 'lit', text: String(value) });
    return el('span', { text: String(value) });
  }

  /** The objects every payload carries (who sent it, which repository): folded at first,
   * so that what the event is about shows without scrolling. */
  const ENVELOPE = new Set(['repository', 'sender', 'organization', 'installation', 'enterprise']);

  /** How much of a payload is unfolded at first: the top level, and its objects other
   * than the envelope. */
  const payloadOpen = (depth, key) => depth === 0 || (depth === 1 && !ENVELOPE.has(key));
  const allFolded = () => false;

  /** A foldable tree of `value`; children of a closed node are built when it is opened.
   * `unfolded(depth, key)` says which nodes start open. */
  function jsonTree(value, key, depth, unfolded) {
    const keyPart = key === undefined ? null : [el('span', { class: 'key', text: typeof key === 'number' ? String(key) : JSON.stringify(key) }), ': '];
    if (value === null || typeof value !== 'object') return el('div', { class: 'row' }, keyPart, jsonValue(value));
    const isArray = Array.isArray(value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = isArray ? ['[', ']'] : ['{', '}'];
    if (entries.length === 0) return el('div', { class: 'row' }, keyPart, `${open}${close}`);
    const node = el('details', null, el('summary', null, keyPart, open,
      el('span', { class: 'count', text: ` ${entries.length} ${isArray ? (entries.length === 1 ? 'item' : 'items') : (entries.length === 1 ? 'key' : 'keys')} ` }), close));
    let built = false;
    const build = () => {
      if (built) return;
      built = true;
      node.append(...entries.map(([k, v]) => jsonTree(v, k, depth + 1, unfolded)));
    };
    node.addEventListener('toggle', () => node.open && build());
    if (unfolded(depth, key)) {
      node.open = true;
      build();
    }
    return node;
  }

  function setAllOpen(root, open) {
    // Opening builds the children, which may hold more closed nodes: repeat until none.
    for (let round = 0; round < 64; round += 1) {
      const closed = [...root.querySelectorAll('details')].filter((d) => d.open !== open);
      if (closed.length === 0) break;
      for (const d of closed) {
        d.open = open;
        if (open) d.dispatchEvent(new Event('toggle'));
      }
      if (!open) break;
    }
  }

  const RAW_LIMIT = 2 * 1024 * 1024;

  function mountDelivery(root, id) {
    const memo = {};
    const title = el('div', { class: 'header-row' });
    const summary = el('section', { class: 'panel', id: 'delivery-summary' });
    const attempts = el('section', { class: 'panel', id: 'delivery-attempts' });
    const changes = el('section', { class: 'panel', id: 'delivery-changes' });
    const headers = el('section', { class: 'panel', id: 'delivery-headers' });
    const payload = el('section', { class: 'panel', id: 'delivery-payload' });
    const replay = el('button', {
      type: 'button', id: 'replay', class: 'primary', text: 'Replay',
      onclick: (event) => runAction(event.currentTarget, {
        title: 'Replay delivery', confirmLabel: 'Replay',
        body: `Process delivery ${id} again, as if it had just arrived? Its effects are idempotent: what is already stored is not applied twice.`,
        path: `/api/deliveries/${encodeURIComponent(id)}/replay`,
        result: () => `Delivery ${id} queued again.`,
      }),
    });
    put(root,
      el('p', null, el('a', { href: '#/deliveries', text: '← All deliveries' })),
      title, summary, attempts, changes, headers, payload);

    const field = (name, ...value) => el('div', null, el('dt', { text: name }), el('dd', null, value));

    function drawSummary(d) {
      put(title,
        el('h1', null, 'Delivery ', el('span', { class: 'mono', text: d.delivery_id })),
        el('div', { class: 'toolbar' }, el('span', { id: 'delivery-status' }, badge(dash(d.status), d.status)), replay));
      put(summary,
        el('h2', { text: 'Summary' }),
        el('dl', { class: 'fields' },
          field('Event', dash(d.event), d.action ? ` · ${d.action}` : ''),
          field('Repository', d.repository ? el('a', { href: `#/deliveries?repository=${encodeURIComponent(d.repository)}`, text: d.repository }) : '—'),
          field('Hook', dash(d.hook_id)),
          field('Received', timeEl(d.received_at)),
          field('Status', badge(dash(d.status), d.status)),
          field('Attempts', String(d.attempts ?? 0)),
          field('Next attempt', timeEl(d.next_attempt_at)),
          field('Started', timeEl(d.started_at)),
          field('Finished', timeEl(d.finished_at)),
          field('Worker', dash(d.worker))),
        d.last_error ? el('p', { class: 'notice error', id: 'delivery-error' }, el('strong', { text: 'Last error: ' }), d.last_error) : null);
    }

    function drawAttempts(list) {
      put(attempts, el('h2', { text: `Attempts (${list.length})` }), table(
        ['#', 'Started', 'Finished', 'Took', 'Worker', 'Outcome', 'Error'],
        list.map((a, i) => {
          const took = typeof a.took_ms === 'number' ? a.took_ms / 1000 : null;
          // A replay starts counting again at 1.
          const replay = i > 0 && a.attempt === 1;
          return el('tr', null,
            el('td', { class: 'num' }, String(a.attempt ?? ''), replay ? el('span', { class: 'muted', text: ' (replay)' }) : null),
            el('td', null, timeEl(a.started_at)),
            el('td', null, timeEl(a.finished_at)),
            el('td', { class: 'num', text: duration(took) }),
            el('td', { text: dash(a.worker) }),
            el('td', null, badge(dash(a.outcome), a.outcome)),
            el('td', { class: 'error', text: a.error || '' }));
        }),
        'Not attempted yet.'));
    }

    function drawChanges(list) {
      put(changes, el('h2', { text: `What it changed in the local copy (${list.length})` }), list.length === 0
        ? el('p', { class: 'muted', text: 'Nothing: no change to the local copy is recorded for this delivery (yet).' })
        : table(['Seq', 'At', 'Kind', 'Key', 'Op', 'State'], list.map((c) => el('tr', null,
          el('td', { class: 'num', text: String(c.seq) }),
          el('td', null, timeEl(c.at)),
          el('td', { text: dash(c.kind) }),
          el('td', { class: 'mono', text: dash(c.key) }),
          el('td', null, badge(dash(c.op), c.op)),
          el('td', null, c.state === undefined || c.state === null ? '—' : el('div', { class: 'json' }, jsonTree(c.state, undefined, 0, allFolded))))), ''));
    }

    function drawHeaders(kept) {
      const entries = Object.entries(kept || {});
      put(headers, el('h2', { text: 'Headers kept' }), table(['Header', 'Value'],
        entries.map(([name, value]) => el('tr', null, el('td', { class: 'mono', text: name }), el('td', { class: 'mono', text: typeof value === 'string' ? value : JSON.stringify(value) }))),
        'No headers were kept.'));
    }

    function drawPayload(body, size) {
      const big = (size || 0) > RAW_LIMIT;
      const tree = el('div', { class: 'json', id: 'payload-tree' });
      const raw = el('pre', { class: 'json raw', id: 'payload-raw', hidden: true });
      let rawFilled = false;
      if (typeof body === 'string' || big) {
        raw.textContent = typeof body === 'string' ? body : JSON.stringify(body, null, 2);
        rawFilled = true;
        raw.hidden = false;
        tree.hidden = true;
      } else {
        tree.append(jsonTree(body, undefined, 0, payloadOpen));
      }
      const toggleRaw = el('button', {
        type: 'button', 'aria-pressed': String(!raw.hidden), text: 'Raw JSON',
        onclick: () => {
          if (!rawFilled) {
            raw.textContent = JSON.stringify(body, null, 2);
            rawFilled = true;
          }
          raw.hidden = !raw.hidden;
          tree.hidden = !raw.hidden || typeof body === 'string' || big;
          toggleRaw.setAttribute('aria-pressed', String(!raw.hidden));
        },
      });
      const tools = typeof body === 'string' || big ? [] : [
        el('button', { type: 'button', text: 'Expand all', onclick: () => setAllOpen(tree, true) }),
        el('button', { type: 'button', text: 'Collapse all', onclick: () => setAllOpen(tree, false) }),
        toggleRaw,
      ];
      const fold = el('details', { class: 'fold', open: !big },
        el('summary', null, el('h2', { text: 'Payload' }), el('span', { class: 'muted', id: 'payload-size', text: ` · ${bytes(size)}${big ? ' (shown as text: too large for the tree)' : ''}` })),
        el('div', { class: 'toolbar' }, tools), tree, raw);
      put(payload, fold);
    }

    return {
      title: `Delivery ${id}`,
      async refresh() {
        const answer = await api(`/api/deliveries/${encodeURIComponent(id)}`);
        if (changed(memo, 'delivery', answer.delivery)) drawSummary(answer.delivery);
        if (changed(memo, 'attempts', answer.attempts || [])) drawAttempts(answer.attempts || []);
        if (changed(memo, 'changes', answer.changes || [])) drawChanges(answer.changes || []);
        // Headers and payload never change: drawn once, so folds stay as the reader left them.
        if (!memo.static) {
          memo.static = true;
          drawHeaders(answer.headers);
          drawPayload(answer.payload, answer.payload_bytes);
        }
      },
    };
  }

  // ---- The local copy

  const TABS = [['branches', 'Branches'], ['commits', 'Commits'], ['pulls', 'Pull requests'], ['issues', 'Issues'], ['releases', 'Releases']];

  function mountCopy(root, repoId, tab, params) {
    const memo = {};
    tab = TABS.some(([key]) => key === tab) ? tab : 'branches';
    const titleRow = el('div', { class: 'header-row' });
    const tabs = el('nav', { class: 'tabs', 'aria-label': 'Local copy' });
    const controls = el('div', { class: 'toolbar controls', id: 'copy-controls' });
    const content = el('div', { id: 'copy-content' });
    put(root, titleRow, tabs, controls, content);
    let repo = null;
    let limit = Number(params.get('limit')) || 50;
    const state = params.get('state') || (tab === 'pulls' || tab === 'issues' ? 'all' : '');
    const branch = params.get('branch') || '';
    let reviewsMissing = false;
    let moreButton = null;
    const reviewMemo = { generation: -1, pulls: '', byPull: new Map() };

    function href(nextTab, extra) {
      const query = new URLSearchParams(extra || {});
      return `#/copy/${repoId}/${nextTab}${query.toString() ? `?${query}` : ''}`;
    }

    function go(extra) {
      location.hash = href(tab, extra);
    }

    function drawFrame(repos) {
      const select = el('select', { id: 'copy-repository', 'aria-label': 'Repository', onchange: (e) => { location.hash = `#/copy/${e.target.value}/${tab}`; } },
        repos.map((r) => el('option', { value: String(r.id), text: r.repository })));
      select.value = String(repoId);
      put(titleRow,
        el('h1', null, 'Local copy of ', githubLink(githubBase(repo), repo.repository)),
        el('div', { class: 'toolbar' }, select));
      put(tabs, ...TABS.map(([key, text]) => el('a', { href: href(key), 'aria-current': key === tab ? 'page' : null, text })));
      const stateSelect = (options) => {
        const s = el('select', { id: 'copy-state', onchange: (e) => go({ state: e.target.value }) }, options.map((o) => el('option', { value: o, text: o })));
        s.value = state;
        return el('label', null, 'State ', s);
      };
      // Offered only when the list filled the limit (there may be more).
      const limitButton = el('button', { type: 'button', id: 'copy-more', text: 'Show 50 more', hidden: true, onclick: () => go({ ...(branch ? { branch } : {}), ...(state ? { state } : {}), limit: String(limit + 50) }) });
      if (tab === 'commits') {
        const branchSelect = el('select', { id: 'copy-branch', onchange: (e) => go(e.target.value ? { branch: e.target.value } : {}) }, el('option', { value: '', text: 'all branches' }));
        moreButton = limitButton;
        put(controls, el('label', null, 'Branch ', branchSelect), limitButton);
        api(`/api/repositories/${repoId}/branches`).then((branches) => {
          branchSelect.append(...branches.map((b) => el('option', { value: b.name, text: b.name })));
          branchSelect.value = branch;
        }).catch(() => {});
      } else if (tab === 'pulls') {
        moreButton = limitButton;
        put(controls, stateSelect(['all', 'open', 'closed', 'merged']), limitButton);
      } else if (tab === 'issues') {
        moreButton = limitButton;
        put(controls, stateSelect(['all', 'open', 'closed']), limitButton);
      } else {
        put(controls, el('span', { class: 'muted', text: 'From the local copy; each entry links to GitHub.' }));
      }
    }

    const base = () => githubBase(repo);

    function drawBranches(list) {
      put(content, table(['Branch', 'Head', 'Synced'], list.map((b) => el('tr', null,
        el('td', null, githubLink(`${base()}/tree/${encodePath(b.name)}`, b.name)),
        el('td', { class: 'mono' }, b.head_sha ? githubLink(`${base()}/commit/${encodeURIComponent(b.head_sha)}`, shortSha(b.head_sha)) : '—'),
        el('td', null, timeEl(b.synced_at)))), 'No branch recorded yet.'));
    }

    function pathsList(paths) {
      if (!Array.isArray(paths) || paths.length === 0) return el('span', { class: 'muted', text: 'no paths changed' });
      const item = (p) => {
        const path = typeof p === 'string' ? p : p.path;
        const kind = typeof p === 'string' ? '' : String(p.change || '').slice(0, 1).toUpperCase();
        return el('li', null, el('span', { class: `change-kind ${['A', 'M', 'D'].includes(kind) ? kind : ''}`, title: p.change || '', text: kind }), path);
      };
      if (paths.length <= 6) return el('ul', { class: 'paths' }, paths.map(item));
      return el('details', null, el('summary', { text: `${paths.length} paths changed` }), el('ul', { class: 'paths' }, paths.map(item)));
    }

    function drawCommits(list) {
      put(content, table(['Commit', 'Message and paths', 'Author', 'Committed'], list.map((c) => {
        const message = String(c.message || '');
        const [first, ...rest] = message.split('\n');
        const body = rest.join('\n').trim();
        return el('tr', { 'data-sha': c.sha },
          el('td', { class: 'mono' }, githubLink(`${base()}/commit/${encodeURIComponent(c.sha)}`, shortSha(c.sha))),
          el('td', null, el('div', { class: 'message', text: first }), body ? el('details', null, el('summary', { text: 'more' }), el('div', { class: 'message muted', text: body })) : null, pathsList(c.paths)),
          el('td', { text: dash(c.author_name) }),
          el('td', { class: 'nowrap' }, timeEl(c.committed_at)));
      }), 'No commit recorded yet.'));
    }

    function pullState(p) {
      if (p.merged) return badge('merged');
      if (p.draft && p.state === 'open') return badge('draft');
      return badge(dash(p.state), p.state);
    }

    /** The repository's reviews by pull request number: one request, made again when the
     * pull requests changed or the change feed said something did. */
    async function reviewsFor(pulls) {
      if (reviewsMissing) return reviewMemo.byPull;
      const key = JSON.stringify(pulls.map((p) => [p.number, p.updated_at]));
      if (reviewMemo.pulls === key && reviewMemo.generation === feedGeneration) return reviewMemo.byPull;
      const generation = feedGeneration;
      const byPull = new Map();
      try {
        for (const review of await api(`/api/repositories/${repoId}/reviews?limit=1000`)) {
          if (!byPull.has(review.pull_number)) byPull.set(review.pull_number, []);
          byPull.get(review.pull_number).push(review);
        }
      } catch (e) {
        // A daemon whose API has no reviews view: show the pull requests without them.
        if (e.status !== 404) throw e;
        reviewsMissing = true;
      }
      reviewMemo.pulls = key;
      reviewMemo.generation = generation;
      reviewMemo.byPull = byPull;
      return byPull;
    }

    function drawPulls(list, reviews) {
      put(content, table(['Pull request', 'State', 'Author', 'Branches', 'Updated'], list.map((p) => {
        const own = reviews.get(p.number) || [];
        return el('tr', { 'data-pull': String(p.number) },
          el('td', null,
            githubLink(`${base()}/pull/${encodeURIComponent(p.number)}`, `#${p.number} ${dash(p.title)}`),
            el('div', null, labelChips(p.labels)),
            own.length ? el('ul', { class: 'reviews', 'aria-label': 'Reviews' }, own.map((r) => el('li', { 'data-review': String(r.id) },
              badge(String(r.state || '').toLowerCase().replace(/_/g, ' ') || 'review', /approved/i.test(r.state) ? 'ok' : /changes/i.test(r.state) ? 'bad' : 'neutral'),
              ` ${dash(r.author)} · `,
              r.html_url && safeHref(r.html_url)
                ? el('a', { href: r.html_url, rel: 'noreferrer noopener', target: '_blank', title: 'The review on GitHub' }, timeEl(r.submitted_at))
                : timeEl(r.submitted_at),
              r.body ? el('div', { class: 'message muted', text: r.body }) : null))) : null),
          el('td', null, pullState(p)),
          el('td', { text: dash(p.author) }),
          el('td', { class: 'mono' }, `${dash(p.base_ref)} ← ${dash(p.head_ref)}`),
          el('td', { class: 'nowrap' }, timeEl(p.updated_at)));
      }), 'No pull request recorded.'));
    }

    function drawIssues(list) {
      put(content, table(['Issue', 'State', 'Author', 'Assignees', { text: 'Comments', cls: 'num' }, 'Updated'], list.map((i) => el('tr', { 'data-issue': String(i.number) },
        el('td', null, githubLink(`${base()}/issues/${encodeURIComponent(i.number)}`, `#${i.number} ${dash(i.title)}`), el('div', null, labelChips(i.labels))),
        el('td', null, badge(dash(i.state), i.state)),
        el('td', { text: dash(i.author) }),
        el('td', { text: Array.isArray(i.assignees) && i.assignees.length ? i.assignees.join(', ') : '—' }),
        el('td', { class: 'num', text: String(i.comments ?? 0) }),
        el('td', { class: 'nowrap' }, timeEl(i.updated_at)))), 'No issue recorded.'));
    }

    function drawReleases(list) {
      put(content, table(['Tag', 'Name', 'Kind', 'Published'], list.map((r) => el('tr', null,
        el('td', { class: 'mono' }, githubLink(`${base()}/releases/tag/${encodePath(r.tag_name)}`, dash(r.tag_name))),
        el('td', { text: dash(r.name) }),
        el('td', null, r.draft ? badge('draft') : null, r.prerelease ? badge('prerelease', 'warn') : null, !r.draft && !r.prerelease ? badge('release', 'ok') : null),
        el('td', null, timeEl(r.published_at)))), 'No release recorded.'));
    }

    return {
      title: 'Local copy',
      async refresh() {
        const repos = await repositories();
        repo = repos.find((r) => String(r.id) === String(repoId));
        if (!repo) {
          put(content, el('p', { class: 'notice error', text: `No tracked repository has id ${repoId}.` }));
          return;
        }
        if (changed(memo, 'frame', repos.map((r) => [r.id, r.repository, r.html_url]))) drawFrame(repos);
        const path = `/api/repositories/${repoId}`;
        if (tab === 'branches') {
          const list = await api(`${path}/branches`);
          if (changed(memo, 'list', list)) drawBranches(list);
        } else if (tab === 'commits') {
          const query = new URLSearchParams({ limit: String(limit) });
          if (branch) query.set('branch', branch);
          const list = await api(`${path}/commits?${query}`);
          if (moreButton) moreButton.hidden = list.length < limit;
          if (changed(memo, 'list', list)) drawCommits(list);
        } else if (tab === 'pulls') {
          const list = await api(`${path}/pulls?${new URLSearchParams({ state, limit: String(limit) })}`);
          if (moreButton) moreButton.hidden = list.length < limit;
          const reviews = await reviewsFor(list);
          if (changed(memo, 'list', [list, [...reviews]])) drawPulls(list, reviews);
        } else if (tab === 'issues') {
          const list = await api(`${path}/issues?${new URLSearchParams({ state, limit: String(limit) })}`);
          if (moreButton) moreButton.hidden = list.length < limit;
          if (changed(memo, 'list', list)) drawIssues(list);
        } else {
          const list = await api(`${path}/releases`);
          if (changed(memo, 'list', list)) drawReleases(list);
        }
      },
    };
  }

  function mountCopyIndex(root) {
    const memo = {};
    const list = el('div', { id: 'copy-repositories' });
    put(root, heading('Local copy'), el('p', { class: 'muted', text: 'What this daemon has stored of each tracked repository: branches, commits, pull requests, issues and releases.' }), list);
    return {
      title: 'Local copy',
      async refresh() {
        const repos = await repositories();
        if (!changed(memo, 'repos', repos.map((r) => [r.id, r.repository]))) return;
        put(list, repos.length === 0
          ? el('p', { class: 'notice', text: 'No repository is tracked yet.' })
          : el('div', { class: 'cards' }, repos.map((r) => el('div', { class: 'card' },
            el('div', { class: 'value' }, el('a', { href: `#/copy/${r.id}/branches`, text: r.repository })),
            el('div', { class: 'sub' }, TABS.map(([key, text], i) => [i ? ' · ' : '', el('a', { href: `#/copy/${r.id}/${key}`, text })]))))));
      },
    };
  }

  // ---------------------------------------------------------------- Router and refresh loop

  function parseRoute() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    const parts = path.split('/').filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
    return { parts, params: new URLSearchParams(query || '') };
  }

  let refreshing = null;
  let refreshTimer = null;

  function mount() {
    if (view && view.dispose) view.dispose();
    const { parts, params } = parseRoute();
    const root = el('div', { class: 'view' });
    const [first, second, third] = parts;
    let section = 'overview';
    if (!first) view = mountOverview(root);
    else if (first === 'repositories') { section = 'repositories'; view = mountRepositories(root); }
    else if (first === 'deliveries' && second) { section = 'deliveries'; view = mountDelivery(root, second); }
    else if (first === 'deliveries') { section = 'deliveries'; view = mountDeliveries(root, params); }
    else if (first === 'copy' && second) { section = 'copy'; view = mountCopy(root, second, third, params); }
    else if (first === 'copy') { section = 'copy'; view = mountCopyIndex(root); }
    else {
      view = { title: 'Not found', refresh: async () => {} };
      root.append(heading('Not found'), el('p', null, 'No such page. ', el('a', { href: '#/', text: 'Back to the overview' })));
    }
    for (const link of document.querySelectorAll('[data-nav]')) {
      if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = `${view.title} · futurnal`;
    put(main(), root);
    refreshNow();
  }

  /** Re-reads what the open view shows; the loop does so every REFRESH_MS. */
  function refreshNow() {
    clearTimeout(refreshTimer);
    const current = view;
    const started = Date.now();
    const run = (async () => {
      if (refreshing) await refreshing.catch(() => {});
      if (current !== view) return;
      try {
        await current.refresh();
        if (current === view) clearError();
      } catch (e) {
        if (current === view) showError(e);
      }
    })();
    refreshing = run;
    run.finally(() => {
      if (refreshing === run) refreshing = null;
      if (current === view) {
        // Every REFRESH_MS from the start of the last read, however long it took.
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(tick, Math.max(100, REFRESH_MS - (Date.now() - started)));
      }
    });
    return run;
  }

  function tick() {
    // A confirmation open, or a hidden tab: wait; the view is re-read when it is back.
    if (document.hidden || $('#confirm').open) {
      refreshTimer = setTimeout(tick, REFRESH_MS);
      return;
    }
    refreshNow();
  }

  /** Follows the change feed (long-polling, so the admin token can go along): each change
   * re-reads the open view at once, without waiting for the next tick. */
  async function followChanges() {
    let since = null;
    let pause = 1000;
    for (;;) {
      try {
        if (since === null) {
          try {
            const first = await api('/api/changes?since=0&limit=1');
            since = first.newest ?? 0;
          } catch (e) {
            // The oldest changes were pruned: follow from the newest, which the 410 names.
            if (e.status !== 410 || !e.body) throw e;
            since = e.body.resume_from ?? 0;
          }
        }
        const page = await api(`/api/changes?since=${since}&limit=100&wait=25`);
        pause = 1000;
        if (page.changes && page.changes.length) {
          feedGeneration += 1;
          if (!$('#confirm').open) refreshNow();
        }
        since = page.next ?? since;
      } catch (e) {
        if (e.status === 410) since = null;
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 15000);
      }
    }
  }


  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refreshNow();
  });
  window.addEventListener('hashchange', () => {
    mount();
    main().focus({ preventScroll: true });
  });
  mount();
  followChanges();
})();
