// ippool console. Plain JavaScript, no build step, no dependencies: every
// page reads the same /v1 API as the CLI, with the operator's token from
// this tab's sessionStorage, and builds its DOM with textContent (never
// HTML from data). Writes send the CLI's requests and show the API's error
// sentence as it is.
'use strict';

(() => {
  document.documentElement.classList.add('js');

  const TOKEN_KEY = 'ippool.token';
  const SAMPLES_KEY = 'ippool.samples';
  const SAMPLE_EVERY = 2000; // ms between reads of /v1/stats
  const WINDOW = 5 * 60 * 1000; // what the charts and recent counts cover
  const PAGE = document.body.dataset.page;

  // ---- small helpers ----

  const $ = (id) => document.getElementById(id);

  // h builds an element: h('td', {class: 'num'}, 'text', child, ...).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function svgEl(tag, attrs) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  }

  const nf = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (n === undefined || n === null ? '–' : nf.format(n));

  function fmtRate(x) {
    if (!isFinite(x)) return '–';
    if (x >= 1000) return (x / 1000).toFixed(x >= 10000 ? 0 : 1) + 'k';
    if (x >= 100) return x.toFixed(0);
    if (x >= 10) return x.toFixed(1);
    return x.toFixed(x === 0 ? 0 : 2);
  }

  function fmtPct(part, whole) {
    if (!whole) return '0%';
    const p = (100 * part) / whole;
    if (p > 0 && p < 0.1) return '<0.1%';
    return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%';
  }

  // fmtSpan writes a duration in ms as "3 h 12 min", "45 s".
  function fmtSpan(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min';
    const hr = Math.floor(m / 60);
    if (hr < 48) return hr + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
    const d = Math.floor(hr / 24);
    return d + ' d' + (hr % 24 ? ' ' + (hr % 24) + ' h' : '');
  }

  // parseGoDuration reads Go's time.Duration text ("48h0m0s", "500ms").
  function parseGoDuration(s) {
    if (!s) return NaN;
    const units = { h: 3600e3, m: 60e3, s: 1e3, ms: 1, us: 1e-3, 'µs': 1e-3, ns: 1e-6 };
    let ms = 0;
    const re = /([\d.]+)(h|ms|m|s|us|µs|ns)/g;
    let m;
    let seen = false;
    while ((m = re.exec(s))) {
      ms += parseFloat(m[1]) * units[m[2]];
      seen = true;
    }
    return seen ? ms : NaN;
  }

  function fmtGoDuration(s) {
    const ms = parseGoDuration(s);
    if (!isFinite(ms)) return s || '–';
    if (ms < 1000) return ms + ' ms';
    return fmtSpan(ms);
  }

  function ipToInt(s) {
    const p = s.split('.').map(Number);
    if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return NaN;
    return ((p[0] << 24) >>> 0) + (p[1] << 16) + (p[2] << 8) + p[3];
  }
  const intToIp = (n) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

  const enc = encodeURIComponent;

  // ---- the API ----

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, payload) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      connLost();
      throw new ApiError(0, 'unreachable', 'This server (' + location.host + ') did not answer: ' + e.message);
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const msg = body && body.error ? body.error : resp.status + ' ' + resp.statusText;
      const code = body && body.code ? body.code : 'http_' + resp.status;
      if (resp.status === 401 && auth.ready) showSignin(msg);
      throw new ApiError(resp.status, code, msg);
    }
    return body;
  }

  // ---- access control: the token and what its role may do ----

  const RANK = { read: 1, allocate: 2, admin: 3 };
  const auth = { ready: false, enabled: false, role: 'admin' };
  const can = (role) => !auth.enabled || (RANK[auth.role] || 0) >= RANK[role];

  function applyRole(root) {
    for (const el of (root || document).querySelectorAll('[data-needs]')) {
      const ok = can(el.dataset.needs);
      el.disabled = !ok;
      if (!ok) el.title = 'Needs a token with the ' + el.dataset.needs + ' role';
      else if (el.title.startsWith('Needs a token')) el.removeAttribute('title');
    }
  }

  function showWho() {
    const who = $('who');
    who.hidden = false;
    const foot = $('nav-foot');
    if (foot) foot.lastChild.textContent = auth.enabled ? ' with your token.' : ', which needs no token here (ACLs off).';
    if (!auth.enabled) {
      who.textContent = 'ACLs off';
      who.title = 'Access control is not bootstrapped: anyone who reaches this address may do anything.';
    } else {
      who.textContent = auth.role + ' token';
      who.title = auth.description ? 'Token: ' + auth.description : '';
      $('signout').hidden = false;
    }
  }

  async function checkSelf() {
    const self = await api('GET', '/v1/acl/self');
    auth.enabled = !!self.enabled;
    auth.role = self.enabled && self.token ? self.token.role : 'admin';
    auth.description = self.token && self.token.description;
    auth.ready = true;
    showWho();
  }

  function showSignin(msg) {
    stopTimers();
    auth.ready = false;
    $('content').hidden = true;
    $('banner').hidden = true;
    $('signin').hidden = false;
    const err = $('signin-error');
    err.hidden = !msg;
    err.textContent = msg || '';
    $('token').focus();
  }

  function wireSignin() {
    $('signin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      try {
        await checkSelf();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        showSignin(e.message);
        return;
      }
      $('token').value = '';
      // A page already started (its token stopped working) starts afresh
      // rather than wiring its controls twice.
      if (started) {
        location.reload();
        return;
      }
      $('signin').hidden = true;
      startPage();
    });
    $('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(SAMPLES_KEY);
      location.reload();
    });
  }

  // ---- messages ----

  function showBanner(err) {
    const b = $('banner');
    b.replaceChildren(h('span', {}, err.message));
    if (err.code) b.append(h('span', { class: 'code' }, err.code));
    b.append(h('button', { class: 'dismiss', type: 'button', 'aria-label': 'Dismiss', title: 'Dismiss', onclick: clearBanner }, '×'));
    b.hidden = false;
  }
  const clearBanner = () => {
    $('banner').hidden = true;
  };

  let toastTimer;
  function toast(text) {
    let t = document.querySelector('.toast');
    if (!t) {
      t = h('div', { class: 'toast', role: 'status' });
      document.body.append(t);
    }
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      t.hidden = true;
    }, 3500);
  }

  // confirmAction asks in the page's dialog, naming the CLI command that
  // does the same, and resolves to true on Confirm.
  function confirmAction(title, text, label, cli) {
    const dlg = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-cli').textContent = cli;
    $('confirm-ok').textContent = label;
    dlg.returnValue = '';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---- periodic work ----

  // every runs fn now and then ms after each run ends, skipping runs while
  // the tab is hidden; now() runs it at once, or right after the run in
  // flight.
  const timers = [];
  function every(ms, fn) {
    let stopped = false;
    let handle;
    let busy = false;
    let again = false;
    const run = async () => {
      if (stopped) return;
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      if (!document.hidden) {
        try {
          await fn();
        } catch (e) {
          if (e.status !== 401) showBanner(e);
        }
      }
      busy = false;
      if (again) {
        again = false;
        run();
        return;
      }
      if (!stopped) handle = setTimeout(run, ms);
    };
    const t = {
      stop() {
        stopped = true;
        clearTimeout(handle);
      },
      now() {
        clearTimeout(handle);
        run();
      },
    };
    timers.push(t);
    run();
    return t;
  }
  function stopTimers() {
    while (timers.length) timers.pop().stop();
  }

  // ---- counters sampled for the charts ----

  // Samples of /v1/stats, kept in sessionStorage so the charts keep their
  // history across the console's pages. A sample from another server or
  // an older start (counters went down) starts the history again.
  function loadSamples() {
    try {
      return JSON.parse(sessionStorage.getItem(SAMPLES_KEY)) || [];
    } catch (e) {
      return [];
    }
  }

  let lastStats = null;
  async function sample() {
    const st = await api('GET', '/v1/stats');
    lastStats = st;
    showConn(st.server);
    let samples = loadSamples();
    const t = Date.parse(st.time);
    const prev = samples[samples.length - 1];
    if (prev && (prev.s !== st.server || Object.keys(st.counters).some((k) => st.counters[k] < (prev.c[k] || 0)))) samples = [];
    samples.push({ t, s: st.server, c: st.counters });
    samples = samples.filter((x) => x.t >= t - 2 * WINDOW);
    sessionStorage.setItem(SAMPLES_KEY, JSON.stringify(samples));
    return st;
  }

  // rates returns [{t, v}] per-second rates of counter name over WINDOW.
  function rates(name) {
    const samples = loadSamples();
    const out = [];
    const end = samples.length ? samples[samples.length - 1].t : 0;
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      if (b.t < end - WINDOW || !(name in b.c)) continue;
      const dt = (b.t - a.t) / 1000;
      if (dt <= 0) continue;
      out.push({ t: b.t, v: Math.max(0, ((b.c[name] || 0) - (a.c[name] || 0)) / dt) });
    }
    return out;
  }

  // recent is how much counter name grew over the samples of the last
  // WINDOW, and over what span.
  function recent(name) {
    const samples = loadSamples();
    if (!samples.length) return { n: 0, span: 0 };
    const last = samples[samples.length - 1];
    const first = samples.find((x) => x.t >= last.t - WINDOW) || last;
    return { n: (last.c[name] || 0) - (first.c[name] || 0), span: last.t - first.t };
  }

  // connLost marks the connection indicator while this server does not
  // answer; the next answer's showConn clears it.
  function connLost() {
    const dot = document.querySelector('#conn .dot');
    if (dot) dot.className = 'dot bad';
  }

  function showConn(server, role) {
    const c = $('conn');
    c.hidden = false;
    c.replaceChildren(h('span', { class: 'dot ok' }), h('span', {}, 'Connected to ', h('b', {}, server)));
    if (role) c.append(h('span', { class: 'addr' }, '· ' + role));
    c.title = 'This console reads ' + location.host + ' (server ' + server + ')';
  }

  // ---- shared pieces ----

  function roleBadge(role) {
    return h('span', { class: 'badge ' + (role === 'leader' || role === 'candidate' ? role : '') }, role || 'unknown');
  }

  function health(s) {
    if (s.reachable) return h('span', { class: 'status' }, h('span', { class: 'dot ok' }), 'reachable');
    const since = s.unreachable_since ? ' since ' + new Date(s.unreachable_since).toLocaleString() : '';
    return h('span', { class: 'status bad', title: s.error || '' }, h('span', { class: 'dot bad' }), 'unreachable' + since);
  }

  function leaderApplied(st) {
    const l = (st.servers || []).find((s) => s.id === st.leader_id);
    return l && l.reachable ? l.applied_index : undefined;
  }

  function lagCell(s, leaderIdx) {
    if (!s.reachable || leaderIdx === undefined) return h('td', { class: 'num lag-ok' }, '–');
    const lag = Math.max(0, leaderIdx - (s.applied_index || 0));
    return h('td', { class: 'num ' + (lag > 100 ? 'lag-bad' : 'lag-ok') }, lag === 0 ? '0' : fmtInt(lag));
  }

  function serversSub(st) {
    const n = (st.servers || []).length;
    const up = (st.servers || []).filter((s) => s.reachable).length;
    return up + ' of ' + n + ' reachable from ' + st.id;
  }

  // sparkline draws rates as a small area chart.
  function sparkline(points, span) {
    const w = 300;
    const hgt = 56;
    const svg = svgEl('svg', { viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    svg.append(svgEl('line', { class: 'base', x1: 0, y1: hgt - 0.5, x2: w, y2: hgt - 0.5 }));
    if (points.length < 2) return svg;
    const end = points[points.length - 1].t;
    const max = Math.max(...points.map((p) => p.v), 1e-9);
    const xy = points.map((p) => [w - ((end - p.t) / span) * w, hgt - 2 - (p.v / max) * (hgt - 6)]);
    const line = xy.map(([x, y], i) => (i ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1)).join(' ');
    svg.append(svgEl('path', { class: 'area', d: line + ` L${xy[xy.length - 1][0].toFixed(1)} ${hgt} L${xy[0][0].toFixed(1)} ${hgt} Z` }));
    svg.append(svgEl('path', { class: 'line', d: line }));
    return svg;
  }

  // ---- Overview ----

  const SERIES = [
    { key: 'allocations', name: 'Allocations' },
    { key: 'allocations_new', name: 'New mappings' },
    { key: 'lookups', name: 'Lookups' },
    { key: 'dns_queries', name: 'DNS queries' },
    { key: 'connector_flows', name: 'Connector flows' },
    { key: 'exhaustions', name: 'Exhaustions', bad: true },
  ];

  function overview() {
    let poolCfg = null;
    let poolAt = 0;
    every(SAMPLE_EVERY, async () => {
      // The configuration rarely changes: read it every 30 s.
      const stale = Date.now() - poolAt > 30000;
      const [st, stats, cfg] = await Promise.all([api('GET', '/v1/cluster'), sample(), stale ? api('GET', '/v1/pool') : poolCfg]);
      if (stale) {
        poolCfg = cfg;
        poolAt = Date.now();
      }
      clearBanner();
      $('content').hidden = false;
      showConn(st.id, st.state.toLowerCase());
      renderOverview(st, stats, poolCfg);
    });
  }

  function renderOverview(st, stats, cfg) {
    const servers = st.servers || [];
    const up = servers.filter((s) => s.reachable).length;
    $('t-leader').textContent = st.leader_id || 'none';
    $('t-term').textContent = st.leader_id ? 'term ' + st.term : 'no leader known';
    $('t-servers').textContent = up + ' / ' + servers.length;
    $('t-servers-note').textContent = up === servers.length ? 'all reachable' : servers.length - up + ' unreachable';
    $('t-clients').textContent = fmtInt(stats.clients);
    $('t-mappings').textContent = fmtInt(stats.mappings);
    $('t-held').textContent = fmtInt(stats.held_addresses) + (stats.held_addresses === 1 ? ' held address' : ' held addresses');
    $('t-domains').textContent = fmtInt(stats.domains);
    $('servers-sub').textContent = serversSub(st);

    const li = leaderApplied(st);
    $('servers').tBodies[0].replaceChildren(
      ...servers.map((s) =>
        h('tr', { dataset: { server: s.id, reachable: String(!!s.reachable), role: s.role || '' } },
          h('td', {}, h('b', {}, s.id), s.id === st.id ? [' ', h('span', { class: 'badge here' }, 'this server')] : null),
          h('td', { class: 'mono hide-sm' }, s.addr),
          h('td', {}, roleBadge(s.role)),
          h('td', {}, health(s)),
          h('td', { class: 'num' }, s.reachable ? fmtInt(s.term) : '–'),
          h('td', { class: 'num' }, s.reachable ? fmtInt(s.applied_index) : '–'),
          lagCell(s, li))));

    // Charts: one per counter this server has.
    const charts = SERIES.filter((x) => x.key in stats.counters);
    const off = SERIES.filter((x) => !(x.key in stats.counters) && (x.key === 'dns_queries' || x.key === 'connector_flows'));
    $('charts').replaceChildren(
      ...charts.map((x) => {
        const pts = rates(x.key);
        const cur = pts.length ? pts[pts.length - 1].v : NaN;
        const max = pts.length ? Math.max(...pts.map((p) => p.v)) : NaN;
        // Until five minutes of samples exist, the chart spans what there is.
        const span = pts.length > 1 ? Math.max(pts[pts.length - 1].t - pts[0].t, SAMPLE_EVERY) : WINDOW;
        return h('div', { class: 'chart' + (x.bad ? ' bad' : ''), dataset: { series: x.key, points: pts.length, span: pts.length > 1 ? span : 0 } },
          h('div', { class: 'top' }, h('span', { class: 'name' }, x.name), h('span', { class: 'now' }, fmtRate(cur), h('small', {}, '/s'))),
          sparkline(pts, span),
          h('div', { class: 'axis' }, h('span', {}, '−' + fmtSpan(span)), h('span', {}, isFinite(max) ? 'peak ' + fmtRate(max) + '/s' : 'gathering…')));
      }));
    $('rates-sub').textContent = 'per second on ' + stats.server + ', last 5 minutes';
    const note = $('rates-note');
    note.hidden = off.length === 0;
    note.textContent = off.length ? (off.length === 2 ? 'DNS and the connector are' : off[0].key === 'dns_queries' ? 'DNS is' : 'The connector is') + ' off on this server.' : '';

    if (cfg) renderPoolCfg(cfg, stats);
  }

  function renderPoolCfg(cfg, stats) {
    const rows = [
      ['Pool', h('span', { class: 'mono' }, cfg.pool || '–')],
      ['Excluded', cfg.exclude ? h('span', { class: 'mono' }, cfg.exclude) : h('span', { class: 'muted' }, 'nothing')],
      ['Addresses per client', fmtInt(stats.pool_size)],
      ['Lifetime', fmtGoDuration(cfg.lifetime)],
      ['Reuse hold (Q)', fmtGoDuration(cfg.reuse_hold)],
      ['Stale bound (B)', fmtGoDuration(cfg.stale_bound)],
    ];
    $('poolcfg').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  // ---- Pool ----

  const RANK_LIMIT = 20;
  const MAX_CELLS = 4096;

  function pool() {
    const st = { offset: 0, prefix: '', selected: null, ranking: null, poolCfg: null, occ: null };
    $('filter-form').addEventListener('submit', (ev) => ev.preventDefault());
    let debounce;
    $('filter').addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        st.prefix = $('filter').value.trim();
        st.offset = 0;
        timer.now();
      }, 250);
    });
    $('rank-prev').addEventListener('click', () => {
      st.offset = Math.max(0, st.offset - RANK_LIMIT);
      timer.now();
    });
    $('rank-next').addEventListener('click', () => {
      st.offset += RANK_LIMIT;
      timer.now();
    });
    wireOccupancyHover(st);
    every(SAMPLE_EVERY, async () => {
      const stats = await sample();
      renderPoolTiles(stats, st.poolCfg);
    });
    const timer = every(5000, async () => {
      const q = `limit=${RANK_LIMIT}&offset=${st.offset}&prefix=${enc(st.prefix)}`;
      const [ranking, cfg] = await Promise.all([api('GET', '/v1/pool/clients?' + q), st.poolCfg ? st.poolCfg : api('GET', '/v1/pool')]);
      st.poolCfg = cfg;
      st.ranking = ranking;
      if (lastStats) renderPoolTiles(lastStats, cfg);
      clearBanner();
      $('content').hidden = false;
      renderRanking(st);
      // The busiest client is rank 1 of every client, whatever the table shows.
      let target = st.selected;
      if (!target) {
        const top = st.offset === 0 && !st.prefix ? ranking : await api('GET', '/v1/pool/clients?limit=1');
        target = top.clients.length ? top.clients[0].client : null;
      }
      if (target) {
        st.occ = await api('GET', `/v1/clients/${enc(target)}/occupancy?cells=${MAX_CELLS}`);
        drawOccupancy($('occ'), st.occ);
      }
      $('occ-panel').hidden = !target;
      $('occ-title').textContent = st.selected ? 'Pool of ' + target : 'Pool of the busiest client, ' + (target || '');
      $('occ-link').href = '/ui/client?id=' + enc(target || '');
      if (st.occ) {
        const sum = occTotals(st.occ);
        $('occ-sub').textContent = fmtInt(sum.live + sum.expired) + ' of ' + fmtInt(st.occ.pool_size) + ' addresses mapped';
        $('occ-scale').textContent = st.occ.block === 1 ? 'One cell per address, in pool order.' : 'One cell per ' + fmtInt(st.occ.block) + ' addresses, in pool order; a stronger colour is a fuller block.';
      }
    });
    timerKick = () => timer.now();
  }

  function renderPoolTiles(stats, cfg) {
    $('t-size').textContent = fmtInt(stats.pool_size);
    $('t-pool').textContent = cfg ? cfg.pool : '';
    $('t-clients').textContent = fmtInt(stats.clients);
    $('t-mappings').textContent = fmtInt(stats.mappings) + ' mappings';
    for (const [key, id] of [['exhaustions', 't-exh'], ['reuses', 't-reuse']]) {
      const r = recent(key);
      $(id).textContent = fmtInt(r.n);
      $(id + '-note').textContent = 'last ' + fmtSpan(Math.max(r.span, 1000)) + ' · ' + fmtInt(stats.counters[key] || 0) + ' since ' + stats.server + ' started';
    }
  }

  function renderRanking(st) {
    const r = st.ranking;
    const size = r.pool_size;
    const rows = r.clients.map((c, i) => {
      const live = c.mappings - c.expired;
      const tr = h('tr', { class: 'selectable' + (c.client === st.selected ? ' selected' : ''), dataset: { client: c.client, mappings: c.mappings }, title: 'Show this client’s pool below' },
        h('td', { class: 'num muted' }, r.offset + i + 1),
        h('td', {}, h('a', { href: '/ui/client?id=' + enc(c.client) }, c.client)),
        h('td', { class: 'num' }, fmtInt(c.mappings)),
        h('td', {}, h('div', { class: 'fill' }, fillBar(live, c.expired, c.held, size), h('span', { class: 'pct' }, fmtPct(c.mappings, size)))),
        h('td', { class: 'num hide-sm' }, fmtInt(c.expired)),
        h('td', { class: 'num hide-sm' }, fmtInt(c.held)));
      tr.addEventListener('click', (ev) => {
        if (ev.target.closest('a')) return;
        st.selected = st.selected === c.client ? null : c.client;
        for (const row of tr.parentNode.children) row.classList.toggle('selected', row.dataset.client === st.selected);
        st.occ = null;
        timerKick();
      });
      return tr;
    });
    const body = $('ranking').tBodies[0];
    if (!rows.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, st.prefix ? 'No client ID starts with “' + st.prefix + '”.' : 'No client holds a mapping yet.')));
    else body.replaceChildren(...rows);
    const last = r.offset + r.clients.length;
    $('rank-range').textContent = r.total ? `${fmtInt(r.offset + 1)}–${fmtInt(last)} of ${fmtInt(r.total)} clients` : '0 clients';
    $('rank-prev').disabled = r.offset === 0;
    $('rank-next').disabled = last >= r.total;
  }
  // timerKick refreshes the pool page now (set by pool()).
  let timerKick = () => {};

  function fillBar(live, expired, held, size) {
    const pct = (n) => (size ? (100 * n) / size : 0);
    const seg = (cls, n) => {
      if (!n) return null;
      const el = h('span', { class: cls });
      // A non-empty part stays visible however small.
      el.style.width = `max(2px, ${pct(n).toFixed(3)}%)`;
      return el;
    };
    return h('div', { class: 'bar', title: `${fmtInt(live)} live, ${fmtInt(expired)} expired, ${fmtInt(held)} held of ${fmtInt(size)}` }, seg('live', live), seg('expired', expired), seg('held', held));
  }

  function occTotals(occ) {
    const t = { live: 0, expired: 0, held: 0 };
    for (const [, l, e, hd] of occ.used) {
      t.live += l;
      t.expired += e;
      t.held += hd;
    }
    return t;
  }

  // occLayout picks the grid: square-ish, at most 64 columns.
  function occLayout(occ) {
    const cols = Math.min(64, Math.max(8, Math.ceil(Math.sqrt(occ.cells))));
    const rows = Math.ceil(occ.cells / cols);
    return { cols, rows };
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // drawOccupancy paints one cell per block: free cells in the track
  // colour, a used one in the colour of what most of it holds, stronger
  // the fuller it is.
  function drawOccupancy(canvas, occ) {
    const { cols, rows } = occLayout(occ);
    const cssW = Math.min(canvas.parentNode.clientWidth || 512, 560);
    const cell = Math.max(4, Math.floor(cssW / cols));
    const gap = cell >= 8 ? 2 : 1;
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = cols * cell + 'px';
    canvas.style.height = rows * cell + 'px';
    canvas.width = cols * cell * dpr;
    canvas.height = rows * cell * dpr;
    canvas.dataset.cell = cell;
    canvas.dataset.cols = cols;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cols * cell, rows * cell);
    const colours = { free: cssVar('--free'), live: cssVar('--live'), expired: cssVar('--expired'), held: cssVar('--held') };
    const used = new Map(occ.used.map((u) => [u[0], u]));
    for (let i = 0; i < occ.cells; i++) {
      const x = (i % cols) * cell;
      const y = Math.floor(i / cols) * cell;
      ctx.globalAlpha = 1;
      ctx.fillStyle = colours.free;
      ctx.fillRect(x, y, cell - gap, cell - gap);
      const u = used.get(i);
      if (!u) continue;
      const [, live, expired, held] = u;
      const size = i === occ.cells - 1 ? occ.pool_size - i * occ.block : occ.block;
      const kind = live >= expired && live >= held ? 'live' : expired >= held ? 'expired' : 'held';
      ctx.globalAlpha = occ.block === 1 ? 1 : 0.3 + (0.7 * (live + expired + held)) / size;
      ctx.fillStyle = colours[kind];
      ctx.fillRect(x, y, cell - gap, cell - gap);
    }
    ctx.globalAlpha = 1;
    canvas.setAttribute('aria-label', `${occ.cells} cells of ${occ.block} addresses; ${occ.used.length} hold mappings or held addresses`);
  }

  // cellAddrs names the first and last address of a cell, counting pool
  // indexes through the pool's ranges.
  function cellAddrs(occ, i) {
    const first = i * occ.block;
    const last = Math.min(occ.pool_size, first + occ.block) - 1;
    const at = (idx) => {
      for (const r of occ.ranges) {
        const from = ipToInt(r.from);
        const n = ipToInt(r.to) - from + 1;
        if (idx < n) return intToIp(from + idx);
        idx -= n;
      }
      return '?';
    };
    return first === last ? at(first) : at(first) + ' – ' + at(last);
  }

  function wireOccupancyHover(st) {
    const canvas = $('occ');
    canvas.addEventListener('mousemove', (ev) => {
      const occ = st.occ;
      if (!occ) return;
      const cell = Number(canvas.dataset.cell);
      const cols = Number(canvas.dataset.cols);
      const rect = canvas.getBoundingClientRect();
      const i = Math.floor((ev.clientY - rect.top) / cell) * cols + Math.floor((ev.clientX - rect.left) / cell);
      if (i < 0 || i >= occ.cells) return;
      const u = occ.used.find((x) => x[0] === i) || [i, 0, 0, 0];
      const size = i === occ.cells - 1 ? occ.pool_size - i * occ.block : occ.block;
      const free = size - u[1] - u[2] - u[3];
      $('occ-info').replaceChildren(h('b', { class: 'mono' }, cellAddrs(occ, i)), h('br'),
        `${fmtInt(u[1])} live · ${fmtInt(u[2])} expired · ${fmtInt(u[3])} held · ${fmtInt(free)} free`);
    });
  }

  // ---- Client ----

  const MAP_LIMIT = 50;

  function client() {
    const params = new URLSearchParams(location.search);
    const st = { id: params.get('id') || '', offset: Number(params.get('offset')) || 0, poolCfg: null, page: null, highlight: null };
    $('client-id').value = st.id;
    $('content').hidden = false;

    $('search-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const id = $('client-id').value.trim();
      if (!id) return;
      st.id = id;
      st.offset = 0;
      st.highlight = null;
      $('lookup-result').hidden = true;
      load();
    });
    $('lookup-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      lookup($('lookup-ip').value.trim());
    });
    $('map-prev').addEventListener('click', () => {
      st.offset = Math.max(0, st.offset - MAP_LIMIT);
      load();
    });
    $('map-next').addEventListener('click', () => {
      st.offset += MAP_LIMIT;
      load();
    });
    $('release-all').addEventListener('click', releaseAll);
    every(SAMPLE_EVERY, sample);

    // load shows the current page; after a write it reads through the read
    // barrier (consistent), since this server may not have applied the
    // write yet when the leader answered it.
    async function load(afterWrite) {
      history.replaceState(null, '', st.id ? `/ui/client?id=${enc(st.id)}${st.offset ? '&offset=' + st.offset : ''}` : '/ui/client');
      $('lookup-ip').disabled = $('lookup-btn').disabled = !st.id;
      if (!st.id) return;
      try {
        if (!st.poolCfg) st.poolCfg = await api('GET', '/v1/pool');
        const consistent = afterWrite ? '&consistent=true' : '';
        const [page, occ] = await Promise.all([
          api('GET', `/v1/clients/${enc(st.id)}?limit=${MAP_LIMIT}&offset=${st.offset}${consistent}`),
          api('GET', `/v1/clients/${enc(st.id)}/occupancy?cells=1${consistent}`),
        ]);
        if (st.offset > 0 && page.mappings.length === 0 && page.total > 0) {
          st.offset = Math.floor((page.total - 1) / MAP_LIMIT) * MAP_LIMIT;
          return load(afterWrite);
        }
        st.page = page;
        clearBanner();
        renderClient(st, page, occ);
      } catch (e) {
        if (e.status !== 401) showBanner(e);
      }
    }

    async function lookup(ip) {
      const box = $('lookup-result');
      if (isNaN(ipToInt(ip))) {
        box.hidden = false;
        box.replaceChildren(ip + ' is not an IPv4 address.');
        return;
      }
      try {
        // A page from the address on: no lookup write (a GET of
        // /v1/clients/{c}/ips/{ip} would mark the mapping used).
        const at = await api('GET', `/v1/clients/${enc(st.id)}?limit=1&from=${enc(ip)}`);
        const m = at.mappings[0];
        box.hidden = false;
        if (m && m.ip === ip) {
          box.replaceChildren(h('span', { class: 'mono' }, ip), ' is ', h('b', {}, m.domain), ' for ' + st.id + ', last used ' + fmtSpan(Date.now() - Date.parse(m.last_used)) + ' ago.');
          st.highlight = ip;
        } else {
          box.replaceChildren(st.id + ' has no mapping for ', h('span', { class: 'mono' }, ip), '.');
          st.highlight = null;
        }
        st.offset = Math.floor(at.offset / MAP_LIMIT) * MAP_LIMIT;
        await load();
      } catch (e) {
        if (e.status !== 401) showBanner(e);
      }
    }

    async function release(m) {
      const ok = await confirmAction('Release ' + m.domain + '?',
        `${st.id} loses ${m.domain} → ${m.ip}. The address is held from ${st.id} for the reuse hold (${fmtGoDuration(st.poolCfg && st.poolCfg.reuse_hold)}), then free for another domain.`,
        'Release', `ippool release ${st.id} ${m.domain}`);
      if (!ok) return;
      try {
        await api('DELETE', `/v1/clients/${enc(st.id)}/domains/${enc(m.domain)}`);
        toast('Released ' + m.domain + ' from ' + st.id);
        await load(true);
      } catch (e) {
        if (e.status !== 401) showBanner(e);
      }
    }

    async function releaseAll() {
      const n = st.page ? st.page.total : 0;
      const ok = await confirmAction('Release every mapping of ' + st.id + '?',
        `All ${fmtInt(n)} of ${st.id}'s mappings are dropped; their addresses are held from ${st.id} for the reuse hold.`,
        'Release all', `ippool release ${st.id}`);
      if (!ok) return;
      try {
        const res = await api('DELETE', `/v1/clients/${enc(st.id)}`);
        toast('Released ' + fmtInt(res.released) + ' mappings of ' + st.id);
        st.offset = 0;
        await load(true);
      } catch (e) {
        if (e.status !== 401) showBanner(e);
      }
    }

    function renderClient(st, page, occ) {
      const t = occTotals(occ);
      $('client-none').hidden = true;
      $('client-view').hidden = false;
      $('c-title').textContent = 'Mappings of ' + st.id;
      $('c-mappings').textContent = fmtInt(page.total);
      $('c-fill').textContent = fmtPct(page.total, occ.pool_size) + ' of ' + fmtInt(occ.pool_size) + ' addresses';
      $('c-live').textContent = fmtInt(t.live);
      $('c-expired').textContent = fmtInt(t.expired);
      $('c-held').textContent = fmtInt(t.held);
      const lifetime = parseGoDuration(st.poolCfg && st.poolCfg.lifetime);
      const now = Date.now();
      const rows = page.mappings.map((m) => {
        const used = Date.parse(m.last_used);
        const left = used + lifetime - now;
        const btn = h('button', { class: 'btn btn-sm btn-link-danger', type: 'button', dataset: { needs: 'admin', release: m.domain } }, 'Release');
        btn.addEventListener('click', () => release(m));
        return h('tr', { class: m.ip === st.highlight ? 'flash' : null, dataset: { domain: m.domain, ip: m.ip } },
          h('td', { class: 'wrap' }, m.domain),
          h('td', { class: 'mono' }, m.ip),
          h('td', { class: 'hide-sm', title: new Date(used).toLocaleString() }, fmtSpan(now - used) + ' ago'),
          h('td', {}, !isFinite(left) ? '–' : left > 0 ? 'in ' + fmtSpan(left) : h('span', { class: 'badge candidate' }, 'expired ' + fmtSpan(-left) + ' ago')),
          h('td', { class: 'actions' }, btn));
      });
      const body = $('mappings').tBodies[0];
      if (!rows.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, st.id + ' holds no mapping.')));
      else body.replaceChildren(...rows);
      const last = page.offset + page.mappings.length;
      $('map-range').textContent = page.total ? `${fmtInt(page.offset + 1)}–${fmtInt(last)} of ${fmtInt(page.total)}, in address order` : '';
      $('map-prev').disabled = page.offset === 0;
      $('map-next').disabled = last >= page.total;
      $('release-all').disabled = false;
      applyRole($('client-view'));
      if (!page.total) $('release-all').disabled = true;
    }

    load();
  }

  // ---- Cluster ----

  // ---- policy: the rules, their hits on this server, and a test ----

  function policyPage() {
    every(SAMPLE_EVERY, async () => {
      const p = await api('GET', '/v1/policy');
      clearBanner();
      $('content').hidden = false;
      renderPolicy(p);
    });
    const form = $('policy-test');
    if (form.dataset.wired) return;
    form.dataset.wired = '1';
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const out = $('pt-result');
      const req = { client: $('pt-client').value.trim(), domain: $('pt-domain').value.trim() };
      const port = $('pt-port').value.trim();
      if (port !== '') {
        req.port = Number(port);
        req.proto = $('pt-proto').value;
      }
      try {
        const d = await api('POST', '/v1/policy/test', req);
        out.textContent = d.rule + ': ' + d.action + (d.egress ? ' from ' + d.egress : '') + ' (revision ' + d.revision + ')';
        out.dataset.action = d.action;
      } catch (e) {
        out.textContent = e.message;
        out.dataset.action = 'error';
      }
    });
  }

  function renderPolicy(p) {
    $('policy-sub').textContent = p.revision ? 'revision ' + p.revision + ', ' + p.rules + ' rules' : 'no policy set: every client may reach every domain';
    const rows = (p.hits || []).map((r, i) =>
      h('tr', {}, h('td', { class: 'num' }, i < p.rules ? String(i + 1) : ''), h('td', {}, r.rule),
        h('td', {}, h('span', { class: 'action action-' + r.action }, r.action)), h('td', { class: 'num' }, String(r.hits))));
    $('rules').tBodies[0].replaceChildren(...rows);
    $('policy-text').textContent = p.text || '';
  }

  function cluster() {
    every(SAMPLE_EVERY, async () => {
      const st = await api('GET', '/v1/cluster');
      clearBanner();
      $('content').hidden = false;
      showConn(st.id, st.state.toLowerCase());
      renderCluster(st);
    });
  }

  // entryVersions is a server's readable log entry versions as a range;
  // a server before 0.3.0 does not say, and reads 1 to 3.
  function entryVersions(s) {
    const v = s.entry_versions || [];
    if (!v.length) return '1-3';
    return v.length === 1 ? String(v[0]) : v[0] + '-' + v[v.length - 1];
  }

  function renderCluster(st) {
    const servers = st.servers || [];
    const li = leaderApplied(st);
    $('servers-sub').textContent = serversSub(st);
    $('servers').tBodies[0].replaceChildren(
      ...servers.map((s) => {
        const btn = h('button', { class: 'btn btn-sm btn-link-danger', type: 'button', dataset: { needs: 'admin', remove: s.id } }, 'Remove');
        btn.addEventListener('click', () => removeServer(s, st));
        return h('tr', { dataset: { server: s.id, reachable: String(!!s.reachable), role: s.role || '' } },
          h('td', {}, h('b', {}, s.id), s.id === st.id ? [' ', h('span', { class: 'badge here' }, 'this server')] : null),
          h('td', { class: 'mono' }, s.addr),
          h('td', {}, roleBadge(s.role), s.voter ? null : [' ', h('span', { class: 'badge here' }, 'non-voter')]),
          h('td', {}, health(s), s.error ? h('span', { class: 'err-text', title: s.error }, s.error) : null),
          h('td', { class: 'num' }, s.reachable ? fmtInt(s.term) : '–'),
          h('td', { class: 'num' }, s.reachable ? fmtInt(s.applied_index) : '–'),
          lagCell(s, li),
          h('td', { class: 'mono', title: s.reachable ? 'reads log entry versions ' + entryVersions(s) : '' }, s.reachable ? (s.version || 'before 0.3.0') : '–'),
          h('td', { class: 'actions' }, btn));
      }));
    applyRole($('servers'));
    $('self-title').textContent = 'This server: ' + st.id;
    const rows = [
      ['State', st.state],
      ['Leader', st.leader_id ? st.leader_id + ' (' + st.leader_addr + ')' : 'none known'],
      ['Cluster address', h('span', { class: 'mono' }, st.addr)],
      ['Term', fmtInt(st.term)],
      ['Commit index', fmtInt(st.commit_index)],
      ['Applied index', fmtInt(st.applied_index)],
      ['Last log index', fmtInt(st.last_index)],
      ['Local reads', st.local_reads ? 'on (current: within the stale bound)' : 'off: answers wait for a read barrier'],
      ['Stale bound (B)', fmtGoDuration(st.stale_bound)],
      ['Reuse hold (Q)', fmtGoDuration(st.reuse_hold)],
      ['Held addresses', fmtInt(st.held_addresses)],
      ['Version', (st.version || 'before 0.3.0') + ', reads log entry versions ' + entryVersions(st)],
      ['Every server reads', st.cluster_entry_version ? 'log entry version ' + st.cluster_entry_version + ' and older' : 'unknown'],
      ['Mapping quotas', st.quotas_enforced ? 'enforced' : h('span', { class: 'lag-bad', id: 'quotas-off' }, 'not enforced: ' + (st.quotas_reason || 'unknown'))],
    ];
    const u = st.usage, l = st.limits;
    if (u && l) {
      const of = (n, max) => fmtInt(n) + (max ? ' of ' + fmtInt(max) : ' (no bound)');
      rows.push(['Usage', 'clients ' + of(u.clients, l.max_clients) + '; mappings ' + of(u.mappings, l.max_mappings) +
        ' (' + (l.max_mappings_per_client ? 'at most ' + fmtInt(l.max_mappings_per_client) + ' a client' : 'no bound a client') + '); domain bytes ' + of(u.domain_bytes, l.max_domain_bytes)]);
    }
    // Like etcd's NOSPACE alarm: a quota at its limit, or that refused an
    // allocation lately, is said above everything, a line each.
    const alarms = st.alarms || [];
    $('alarms').replaceChildren(...alarms.map((a) => h('p', {}, a.message)));
    $('alarms').hidden = !alarms.length;
    $('self').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  async function removeServer(s, st) {
    const ok = await confirmAction('Remove ' + s.id + ' from the cluster?',
      `${s.id} (${s.addr}) stops being a member: it no longer votes or receives the log.` +
        (s.id === st.id ? ' It is the server this console reads.' : '') +
        ' To bring it back, start it again with an empty data dir and --join.',
      'Remove server', `ippool cluster remove ${s.id}`);
    if (!ok) return;
    try {
      await api('DELETE', '/v1/cluster/servers/' + enc(s.id));
      toast('Removed ' + s.id);
    } catch (e) {
      if (e.status !== 401) showBanner(e);
    }
  }

  // ---- start ----

  let started = false;
  function startPage() {
    started = true;
    stopTimers();
    $('signin').hidden = true;
    applyRole();
    switch (PAGE) {
      case 'overview':
        overview();
        break;
      case 'pool':
        pool();
        break;
      case 'client':
        client();
        break;
      case 'cluster':
        cluster();
        break;
      case 'policy':
        policyPage();
        break;
    }
  }

  async function boot() {
    wireSignin();
    try {
      await checkSelf();
    } catch (e) {
      if (e.status === 401) {
        showSignin(sessionStorage.getItem(TOKEN_KEY) ? e.message : '');
        return;
      }
      // The page itself will show what fails.
      auth.ready = true;
    }
    startPage();
  }

  boot();
})();
