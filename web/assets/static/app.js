// weft web UI: plain JavaScript, no framework, no build step. Every call
// goes to the controller that served this page: /ui/apis/weft/v1/… (the
// REST API, forwarded with the session's credential), /ui/view/… (the
// UI's aggregated health map and its multiplexed watch). See package web.
'use strict';
(() => {
  const API = 'apis/weft/v1/';
  const STATES = ['Alive', 'Suspect', 'Dead', 'Unknown'];
  const COLORS = ['#2e9e5b', '#e0a323', '#d8403a', '#8a94a6'];
  const main = document.getElementById('main');

  // ui is the page's state; tests read ui.metrics and ui.ready.
  const ui = { session: null, tenants: [], tenant: '', stop: null, metrics: {}, ready: '' };
  window.weft = ui;

  // ---- DOM ----
  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else if (k === 'class') n.className = v;
      else n.setAttribute(k, v === true ? '' : v);
    }
    add(n, kids);
    return n;
  }
  function add(n, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      n.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return n;
  }
  function fill(n, ...kids) { n.replaceChildren(); return add(n, kids); }
  function svg(tag, attrs, ...kids) {
    const n = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    for (const k of kids.flat()) if (k !== null && k !== undefined) n.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return n;
  }
  function show(...kids) { fill(main, kids); }
  function table(head, rows) {
    return el('table', {}, el('thead', {}, el('tr', {}, head.map(h => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: head.length, class: 'muted' }, 'none'))));
  }
  function card(id, n, label, cls) {
    return el('div', { class: 'card ' + (cls || '') }, el('div', { class: 'n', id }, n), el('div', { class: 'l' }, label));
  }
  function notice(text) { return el('p', { class: 'notice' }, text); }
  const fmt = n => Number(n || 0).toLocaleString('en-US');
  const nameOf = o => o.metadata.name;
  const byName = (a, b) => nameOf(a) < nameOf(b) ? -1 : nameOf(a) > nameOf(b) ? 1 : 0;
  function bytes(n) {
    n = Number(n || 0);
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  function until(ts) {
    const s = Math.round((Date.parse(ts) - Date.now()) / 1000);
    return !ts || isNaN(s) ? '' : s <= 0 ? 'expired' : s < 3600 ? 'in ' + Math.ceil(s / 60) + 'm' : s < 172800 ? 'in ' + Math.round(s / 3600) + 'h' : ts.slice(0, 10);
  }
  function ago(ts) {
    if (!ts) return '';
    const s = Math.round((Date.now() - Date.parse(ts)) / 1000);
    return isNaN(s) ? ts : s < 60 ? s + 's ago' : s < 3600 ? Math.round(s / 60) + 'm ago' : Math.round(s / 3600) + 'h ago';
  }

  // ---- HTTP ----
  class APIError extends Error {
    constructor(code, body) { super((body && body.message) || 'HTTP ' + code); this.code = code; this.reason = body && body.reason; }
  }
  async function call(method, path, body) {
    const opts = { method, headers: {}, credentials: 'same-origin' };
    if (method !== 'GET') opts.headers['X-Weft-CSRF'] = ui.session ? ui.session.csrf : '';
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { message: text }; }
    if (!res.ok) {
      if (res.status === 401 && path !== 'login') needLogin();
      throw new APIError(res.status, data);
    }
    return data;
  }
  const tpath = (t, plural, name) => API + 'tenants/' + encodeURIComponent(t) + '/' + plural + (name ? '/' + encodeURIComponent(name) : '');
  // unavailable says an API of the observability issue is not served here.
  function unavailable(e, what) {
    if (e.code === 404) return notice(what + ' are not available on this controller.');
    if (e.code === 403) return notice('Not permitted: ' + e.message);
    return el('p', { class: 'error' }, String(e.message || e));
  }

  // ---- live updates ----
  // watch follows several resources over one multiplexed stream of the
  // API's watch (/ui/view/watch); it reconnects when the stream ends and
  // starts again from a fresh list (onReset). It returns a stop function.
  function watch(resources, h) {
    let ctrl = null, stopped = false, retry = 0;
    const live = document.getElementById('live');
    const setLive = ok => { live.hidden = false; live.textContent = ok ? '● live' : '○ reconnecting'; live.classList.toggle('down', !ok); };
    (async () => {
      while (!stopped) {
        ctrl = new AbortController();
        try {
          const qs = resources.map(r => 'r=' + encodeURIComponent(r)).join('&');
          const res = await fetch('view/watch?' + qs, { signal: ctrl.signal, credentials: 'same-origin' });
          if (res.status === 401) { needLogin(); return; }
          if (!res.ok) throw new APIError(res.status, null);
          h.reset();
          setLive(true);
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            const parts = (buf + dec.decode(value, { stream: true })).split('\n');
            buf = parts.pop();
            for (const p of parts) if (p) h.event(JSON.parse(p));
            h.batch();
          }
          retry = 0;
        } catch (e) {
          if (stopped) return;
          retry++;
        }
        setLive(false);
        await new Promise(r => setTimeout(r, Math.min(5000, 300 * 2 ** retry)));
      }
    })();
    return () => { stopped = true; if (ctrl) ctrl.abort(); };
  }
  // collections keeps the objects of watched resources by tenant/name and
  // calls render (at most once a frame) after changes.
  function collections(resources, render) {
    const cols = resources.map(() => new Map());
    const errors = resources.map(() => null);
    let queued = false;
    const stop = watch(resources, {
      reset() { cols.forEach(c => c.clear()); errors.fill(null); },
      event(ev) {
        const c = cols[ev.r], o = ev.object;
        if (ev.type === 'ADDED' || ev.type === 'MODIFIED') c.set((o.metadata.tenant || '') + '/' + o.metadata.name, o);
        else if (ev.type === 'DELETED') c.delete((o.metadata.tenant || '') + '/' + o.metadata.name);
        else if (ev.type === 'ERROR') errors[ev.r] = o;
      },
      batch() {
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; render(); });
      },
    });
    return { cols, errors, stop, list: i => [...cols[i].values()].sort(byName) };
  }

  // ---- session ----
  async function start() {
    try {
      ui.session = await call('GET', 'session');
    } catch (e) {
      if (e.code !== 401) show(el('p', { class: 'error' }, 'Cannot reach the controller: ' + e.message));
      return;
    }
    enter();
  }
  function needLogin() {
    if (ui.stop) { ui.stop(); ui.stop = null; }
    ui.session = null;
    document.getElementById('nav').hidden = true;
    document.getElementById('logout').hidden = true;
    document.getElementById('live').hidden = true;
    document.getElementById('who').textContent = '';
    fill(main);
    document.getElementById('login').hidden = false;
    document.getElementById('login-token').focus();
    ui.ready = 'login';
  }
  document.getElementById('login-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const input = document.getElementById('login-token');
    const err = document.getElementById('login-error');
    err.textContent = '';
    try {
      ui.session = await call('POST', 'login', { token: input.value.trim() });
    } catch (e) {
      err.textContent = e.code === 401 ? 'Token refused.' : e.message;
      return;
    }
    input.value = '';
    enter();
  });
  document.getElementById('logout').addEventListener('click', async () => {
    try { await call('POST', 'logout'); } catch (e) { /* the session is gone either way */ }
    needLogin();
  });
  async function enter() {
    const s = ui.session;
    document.getElementById('login').hidden = true;
    document.getElementById('nav').hidden = false;
    document.getElementById('logout').hidden = !s.authRequired;
    document.getElementById('who').textContent = s.authRequired ? s.subject + ' (' + s.role + (s.tenant ? ' of ' + s.tenant : '') + ')' : 'no authentication';
    ui.tenant = s.tenant || '';
    await loadTenants();
    route();
  }
  async function loadTenants() {
    try {
      ui.tenants = (await call('GET', API + 'tenants')).items.map(nameOf).sort();
    } catch (e) {
      ui.tenants = ui.tenant ? [ui.tenant] : [];
    }
    if (!ui.tenant || !ui.tenants.includes(ui.tenant)) ui.tenant = ui.tenants[0] || ui.tenant;
    const sel = document.getElementById('tenant-select');
    fill(sel, ...ui.tenants.map(t => el('option', { value: t, selected: t === ui.tenant }, t)));
  }
  document.getElementById('tenant-select').addEventListener('change', ev => {
    ui.tenant = ev.target.value;
    const m = location.hash.match(/^#\/t\/[^/]+(\/(traces|captures|flows))?/);
    location.hash = '#/t/' + encodeURIComponent(ui.tenant) + (m && m[1] ? m[1] : '');
  });

  // ---- routing ----
  const views = [
    [/^\/$/, 'overview', overview],
    [/^\/hosts$/, 'hosts', hosts],
    [/^\/t\/([^/]+)$/, 'tenant', tenantView],
    [/^\/t\/([^/]+)\/ep\/([^/]+)$/, 'tenant', endpointView],
    [/^\/t\/([^/]+)\/traces$/, 'traces', traces],
    [/^\/t\/([^/]+)\/traces\/([^/]+)$/, 'traces', traceView],
    [/^\/t\/([^/]+)\/captures$/, 'captures', captures],
    [/^\/t\/([^/]+)\/flows$/, 'flows', flows],
  ];
  function route() {
    if (!ui.session) return;
    if (ui.stop) { ui.stop(); ui.stop = null; }
    ui.ready = '';
    const [path, query] = (location.hash.slice(1) || '/').split('?');
    const params = new URLSearchParams(query || '');
    for (const [re, name, view] of views) {
      const m = path.match(re);
      if (!m) continue;
      const args = m.slice(1).map(decodeURIComponent);
      if (args.length && args[0] !== ui.tenant && ui.tenants.includes(args[0])) {
        ui.tenant = args[0];
        document.getElementById('tenant-select').value = ui.tenant;
      }
      for (const a of document.querySelectorAll('#nav a')) {
        a.classList.toggle('active', a.dataset.view === name);
        if (a.dataset.tenantLink !== undefined) a.href = '#/t/' + encodeURIComponent(ui.tenant) + (a.dataset.tenantLink ? '/' + a.dataset.tenantLink : '');
      }
      ui.stop = view(params, ...args) || null;
      return;
    }
    show(el('p', { class: 'error' }, 'No such page: ' + path));
  }
  window.addEventListener('hashchange', route);

  // ---- overview ----
  function overview() {
    const summary = el('div', { class: 'cards' });
    const body = el('div');
    show(el('h1', {}, 'Overview'), summary, body);
    const c = collections(['tenants', 'vpcs'], render);
    let hostMap = null, hostErr = null, hostsStop = null, refetch = null;
    async function loadHosts() {
      try {
        hostMap = await call('GET', 'view/hostmap?by=state');
        hostErr = null;
        if (!hostsStop) hostsStop = watch(['hosts?resourceVersion=' + hostMap.revision], {
          reset() {}, event() {}, batch() { clearTimeout(refetch); refetch = setTimeout(loadHosts, 1000); },
        });
      } catch (e) { hostErr = e; }
      render();
    }
    loadHosts();
    function render() {
      const tenants = c.list(0), vpcs = c.list(1);
      const cards = [card('count-tenants', fmt(tenants.length), 'tenants'), card('count-all-vpcs', fmt(vpcs.length), 'VPCs')];
      if (hostMap) {
        cards.push(card('count-hosts', fmt(hostMap.total), 'hosts'));
        STATES.forEach((s, i) => cards.push(card('count-hosts-' + s.toLowerCase(), fmt(hostMap.counts[i]), s, s.toLowerCase())));
      } else if (hostErr) {
        cards.push(el('div', { class: 'card' }, el('div', { class: 'l' }, 'hosts'), el('div', { class: 'muted' }, hostErr.code === 403 ? 'not permitted' : hostErr.message)));
      }
      fill(summary, ...cards);
      const perTenant = new Map();
      for (const v of vpcs) perTenant.set(v.metadata.tenant, (perTenant.get(v.metadata.tenant) || 0) + 1);
      fill(body, el('h2', {}, 'Tenants'), table(['tenant', 'VPCs', 'description', 'created'],
        tenants.map(t => el('tr', {}, el('td', {}, el('a', { href: '#/t/' + encodeURIComponent(nameOf(t)) }, nameOf(t))),
          el('td', {}, fmt(perTenant.get(nameOf(t)))), el('td', {}, t.spec.description || ''), el('td', { class: 'muted' }, ago(t.metadata.creationTimestamp))))));
      const names = tenants.map(nameOf);
      if (names.join() !== ui.tenants.join() && names.length) {
        ui.tenants = names;
        if (!names.includes(ui.tenant)) ui.tenant = names[0];
        fill(document.getElementById('tenant-select'), ...names.map(t => el('option', { value: t, selected: t === ui.tenant }, t)));
      }
      ui.ready = 'overview';
    }
    return () => { c.stop(); if (hostsStop) hostsStop(); clearTimeout(refetch); };
  }

  // ---- hosts: the health map ----
  // The map draws one cell per host on a canvas (never a DOM node per
  // host), grouped by state, replica or name prefix; a click on a group
  // or a cell lists that page of hosts.
  function hosts(params) {
    const by = params.get('by') || 'state', prefix = params.get('prefix') || '';
    const go = p => { location.hash = '#/hosts?' + new URLSearchParams(Object.entries(p).filter(([, v]) => v !== '' && v !== undefined)); };
    const canvas = el('canvas', { id: 'hostmap' });
    const tip = el('div', { class: 'tip', hidden: true });
    const head = el('div', { class: 'cards' });
    const crumbs = el('div', { class: 'crumbs' });
    const list = el('div', { id: 'host-list' });
    const search = el('input', { type: 'search', placeholder: 'host name contains…', value: params.get('q') || '' });
    search.addEventListener('change', () => go({ by, prefix, q: search.value }));
    const toolbar = el('div', { class: 'toolbar' }, 'group by',
      ['state', 'replica', 'prefix'].map(b => el('button', { class: b === by ? 'on' : '', onclick: () => go({ by: b }) }, b)),
      search, el('span', { class: 'legend' }, STATES.map((s, i) => el('span', {}, swatch(i), s))));
    show(el('h1', {}, 'Hosts'), head, toolbar, crumbs, canvas, tip, list);
    let data = null, layout = [], stopWatch = null, refetch = null;
    function swatch(i) { const s = el('span', { class: 'swatch' }); s.style.background = COLORS[i]; return s; }

    async function load() {
      const t0 = performance.now();
      try {
        data = await call('GET', 'view/hostmap?' + new URLSearchParams({ by, prefix }));
      } catch (e) {
        show(el('h1', {}, 'Hosts'), e.code === 403 ? notice('Not permitted: hosts are visible to cluster administrators.') : el('p', { class: 'error' }, e.message));
        return;
      }
      const t1 = performance.now();
      draw();
      const t2 = performance.now();
      ui.metrics.hostmap = { hosts: data.total, groups: data.groups.length, fetchMs: t1 - t0, drawMs: t2 - t1, totalMs: t2 - t0 };
      fill(head, card('hosts-total', fmt(data.total), 'hosts'),
        ...STATES.map((s, i) => card('hosts-' + s.toLowerCase(), fmt(data.counts[i]), s, s.toLowerCase())));
      fill(crumbs);
      if (by === 'prefix') {
        crumbs.append(el('a', { href: '#/hosts?by=prefix' }, '(all)'));
        for (let i = 1; i <= data.prefix.length; i++) {
          if (i < data.prefix.length && !/[-._/:]/.test(data.prefix[i - 1])) continue;
          crumbs.append(' › ', el('a', { href: '#/hosts?' + new URLSearchParams({ by, prefix: data.prefix.slice(0, i) }) }, data.prefix.slice(0, i)));
        }
      }
      if (!stopWatch) stopWatch = watch(['hosts?resourceVersion=' + data.revision], {
        reset() {}, event() {}, batch() { clearTimeout(refetch); refetch = setTimeout(() => { load(); page(); }, 1000); },
      });
      ui.ready = 'hosts';
    }

    // draw lays the groups out — a few as full-width bands, many as tiles
    // — and paints one cell per host, in name order, coloured by state.
    function draw() {
      const dpr = window.devicePixelRatio || 1;
      const width = Math.max(300, canvas.clientWidth || main.clientWidth);
      const tiles = data.groups.length > 12, labelH = tiles ? 16 : 20;
      const groups = data.groups.map(g => ({ g, cells: Uint8Array.from(atob(g.cells || ''), ch => ch.charCodeAt(0)) }));
      let x = 0, y = 4, rowH = 0;
      if (!tiles) {
        const size = Math.max(2, Math.min(14, Math.floor(Math.sqrt(width * 420 / Math.max(1, data.total)))));
        for (const l of groups) {
          Object.assign(l, { x: 0, y, size, cols: Math.floor(width / size), w: width });
          l.h = labelH + Math.max(1, Math.ceil(l.cells.length / l.cols)) * size;
          y += l.h + 8;
        }
      } else {
        const cols = Math.max(1, Math.ceil(Math.sqrt(Math.max(...groups.map(l => l.cells.length)))));
        const size = Math.max(2, Math.min(12, Math.floor(120 / cols))), w = Math.max(cols * size, 96);
        for (const l of groups) {
          if (x + w > width) { x = 0; y += rowH + 10; rowH = 0; }
          Object.assign(l, { x, y, size, cols, w, h: labelH + Math.max(1, Math.ceil(l.cells.length / cols)) * size });
          x += w + 12;
          rowH = Math.max(rowH, l.h);
        }
        y += rowH + 8;
      }
      layout = groups;
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(y * dpr);
      canvas.style.height = y + 'px';
      const ctx = canvas.getContext('2d');
      // Cells go into one pixel buffer, put once: far cheaper than a
      // fillRect per host at 100,000 hosts.
      const img = ctx.createImageData(canvas.width, canvas.height);
      const px = new Uint32Array(img.data.buffer);
      const abgr = COLORS.map(c => 0xff000000 | parseInt(c.slice(5, 7), 16) << 16 | parseInt(c.slice(3, 5), 16) << 8 | parseInt(c.slice(1, 3), 16));
      px.fill(0xffffffff);
      for (const l of groups) {
        const s = Math.max(1, Math.round((l.size - (l.size >= 6 ? 1 : 0)) * dpr));
        for (let i = 0; i < l.cells.length; i++) {
          const x0 = Math.round((l.x + (i % l.cols) * l.size) * dpr), y0 = Math.round((l.y + labelH + Math.floor(i / l.cols) * l.size) * dpr);
          const color = abgr[l.cells[i]] || abgr[3];
          for (let yy = y0; yy < y0 + s; yy++) px.fill(color, yy * canvas.width + x0, yy * canvas.width + x0 + s);
        }
      }
      ctx.putImageData(img, 0, 0);
      ctx.scale(dpr, dpr);
      ctx.textBaseline = 'middle';
      for (const l of groups) {
        const g = l.g, my = l.y + labelH / 2;
        if (tiles) { // the key, clipped to the tile, in the colour of the worst state in it
          ctx.font = '11px "DejaVu Sans", sans-serif';
          ctx.fillStyle = g.counts[2] ? COLORS[2] : g.counts[1] ? COLORS[1] : '#1d2430';
          let t = g.key + ' ' + fmt(g.total);
          while (t.length > 2 && ctx.measureText(t).width > l.w) t = t.slice(0, -2) + '…';
          ctx.fillText(t, l.x, my);
          continue;
        }
        ctx.font = '12px "DejaVu Sans", sans-serif';
        ctx.fillStyle = '#1d2430';
        const label = (by === 'prefix' && !g.leaf ? g.key + '… ' : g.key + ' ') + '— ' + fmt(g.total) + (g.total === 1 ? ' host' : ' hosts');
        ctx.fillText(label, 2, my);
        let tx = ctx.measureText(label).width + 14;
        g.counts.forEach((n, i) => {
          if (!n || n === g.total) return;
          ctx.fillStyle = COLORS[i];
          const t = STATES[i] + ' ' + fmt(n);
          ctx.fillText(t, tx, my);
          tx += ctx.measureText(t).width + 12;
        });
      }
      canvas.dataset.labelH = labelH;
    }

    function hit(ev) {
      const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top, labelH = +canvas.dataset.labelH;
      for (const l of layout) {
        if (x < l.x || x >= l.x + l.w || y < l.y || y >= l.y + l.h) continue;
        if (y < l.y + labelH) return { l, label: true };
        const col = Math.floor((x - l.x) / l.size), i = Math.floor((y - l.y - labelH) / l.size) * l.cols + col;
        return col < l.cols && i < l.cells.length ? { l, i } : null;
      }
      return null;
    }
    canvas.addEventListener('mousemove', ev => {
      const h = hit(ev);
      tip.hidden = !h;
      if (!h) return;
      tip.textContent = h.label ? h.l.g.key + ': ' + fmt(h.l.g.total) + ' hosts — click to ' + (by === 'prefix' && !h.l.g.leaf ? 'open' : 'list')
        : h.l.g.key + ' #' + (h.i + 1) + ': ' + STATES[h.l.cells[h.i]] + ' — click to list';
      tip.style.left = ev.clientX + 12 + 'px';
      tip.style.top = ev.clientY + 12 + 'px';
    });
    canvas.addEventListener('mouseleave', () => { tip.hidden = true; });
    canvas.addEventListener('click', ev => {
      const h = hit(ev);
      if (!h) return;
      if (h.label && by === 'prefix' && !h.l.g.leaf) return go({ by, prefix: h.l.g.key });
      const limit = 50, at = h.i || 0;
      go({ by, prefix, group: h.l.g.key, offset: Math.floor(at / limit) * limit, at: h.label ? '' : at });
    });

    // page lists the hosts of the chosen group (or those matching the search).
    async function page() {
      const group = params.get('group'), q = params.get('q'), state = params.get('state') || '';
      if (group === null && !q) { fill(list); return; }
      const offset = +params.get('offset') || 0, limit = 50, at = params.get('at');
      let p;
      try {
        p = await call('GET', 'view/hosts?' + new URLSearchParams({ by, prefix, group: group || '', state, q: q || '', offset, limit }));
      } catch (e) { fill(list, el('p', { class: 'error' }, e.message)); return; }
      const nav = (o, label, on) => el('button', { disabled: !on, onclick: () => go({ by, prefix, group, q, state, offset: o }) }, label);
      fill(list,
        el('h2', {}, (group ? 'Group ' + group : 'Hosts matching “' + q + '”') + ' — ' + fmt(p.total) + ' hosts'),
        el('div', { class: 'toolbar' }, 'state', ['', ...STATES].map(s => el('button', { class: s === state ? 'on' : '', onclick: () => go({ by, prefix, group, q, state: s }) }, s || 'all'))),
        el('div', { class: 'pager' }, nav(Math.max(0, offset - limit), '‹ prev', offset > 0),
          el('span', { class: 'muted' }, p.total ? fmt(offset + 1) + '–' + fmt(offset + p.items.length) + ' of ' + fmt(p.total) : ''),
          nav(offset + limit, 'next ›', offset + limit < p.total)),
        table(['host', 'state', 'replica', 'underlay', 'last seen', 'agent', 'view', 'error'], p.items.map((h, i) =>
          el('tr', { class: at !== null && +at === offset + i ? 'hl' : '' }, el('td', { class: 'mono' }, h.name),
            el('td', { class: 'state state-' + h.state }, h.state), el('td', { class: 'mono' }, h.replica || ''),
            el('td', { class: 'mono' }, h.underlayIP), el('td', {}, ago(h.lastSeen)), el('td', {}, h.agentVersion || ''),
            el('td', {}, h.viewVersion || ''), el('td', { class: 'error' }, h.lastError || '')))));
    }
    load().then(page);
    const onResize = () => { if (data) draw(); };
    window.addEventListener('resize', onResize);
    return () => { if (stopWatch) stopWatch(); clearTimeout(refetch); window.removeEventListener('resize', onResize); tip.remove(); };
  }

  // ---- a tenant's network: VPC → subnet → endpoint ----
  const tenantResources = t => ['vpcs', 'subnets', 'endpoints', 'securitypolicies', 'qosclasses', 'appintents'].map(p => 'tenants/' + encodeURIComponent(t) + '/' + p);
  const opened = new Map(); // "tenant/vpc" and "tenant/vpc/subnet" → open?
  const shown = new Map(); // "tenant/subnet" → endpoints listed

  function tenantView(params, t) {
    const counts = el('div', { class: 'cards' });
    const tree = el('div', { id: 'tree' });
    show(el('h1', {}, 'Tenant ', el('span', { class: 'mono' }, t)), counts, tree);
    const c = collections(tenantResources(t), render);
    function render() {
      const [vpcs, subnets, eps, pols, qos, intents] = [0, 1, 2, 3, 4, 5].map(c.list);
      fill(counts, card('count-vpcs', fmt(vpcs.length), 'VPCs'), card('count-subnets', fmt(subnets.length), 'subnets'),
        card('count-endpoints', fmt(eps.length), 'endpoints'), card('count-policies', fmt(pols.length), 'policies'), card('count-qos', fmt(qos.length), 'QoS classes'),
        card('count-intents', fmt(intents.length), 'app intents'));
      const err = c.errors.find(e => e);
      const epsBySubnet = new Map();
      for (const e of eps) {
        if (!epsBySubnet.has(e.spec.subnet)) epsBySubnet.set(e.spec.subnet, []);
        epsBySubnet.get(e.spec.subnet).push(e);
      }
      const subnetsByVPC = new Map();
      for (const s of subnets) {
        if (!subnetsByVPC.has(s.spec.vpc)) subnetsByVPC.set(s.spec.vpc, []);
        subnetsByVPC.get(s.spec.vpc).push(s);
      }
      const fold = (key, dflt, cls, summary, ...body) => {
        const d = el('details', { class: cls, open: opened.has(key) ? opened.get(key) : dflt }, el('summary', {}, summary), ...body);
        d.addEventListener('toggle', () => opened.set(key, d.open));
        return d;
      };
      const epTable = (sn, list) => {
        const key = t + '/' + sn, n = shown.get(key) || 100;
        return [table(['endpoint', 'IP', 'MAC', 'host', 'phase', 'labels'], list.slice(0, n).map(e => el('tr', { 'data-endpoint': nameOf(e) },
          el('td', {}, el('a', { href: '#/t/' + encodeURIComponent(t) + '/ep/' + encodeURIComponent(nameOf(e)) }, nameOf(e))),
          el('td', { class: 'mono' }, e.status.ip || e.spec.ip || ''), el('td', { class: 'mono' }, e.status.mac || ''),
          el('td', { class: 'mono' }, e.status.host || e.spec.host || ''), el('td', { class: 'phase-' + (e.status.phase || '') }, e.status.phase || ''),
          el('td', {}, Object.entries(e.metadata.labels || {}).map(([k, v]) => el('span', { class: 'tag' }, k + '=' + v)))))),
        list.length > n ? el('button', { onclick: () => { shown.set(key, n + 100); render(); } }, 'show ' + Math.min(100, list.length - n) + ' more of ' + fmt(list.length - n)) : null];
      };
      const many = eps.length > 500;
      fill(tree, err ? el('p', { class: 'error' }, err.message) : null,
        vpcs.length ? null : el('p', { class: 'muted' }, 'No VPCs.'),
        vpcs.map(v => fold(t + '/' + nameOf(v), true, 'vpc',
          [el('b', {}, 'VPC ' + nameOf(v)), ' ', el('span', { class: 'mono' }, (v.spec.cidrs || []).join(', ')), v.status.vni ? el('span', { class: 'muted' }, '  VNI ' + v.status.vni + ' ') : null,
            v.spec.defaultPolicy === 'deny' ? el('span', { class: 'tag' }, 'default deny') : null, v.spec.qos ? el('span', { class: 'tag' }, 'QoS ' + qosText(v.spec.qos)) : null],
          (subnetsByVPC.get(nameOf(v)) || []).map(s => {
            const list = epsBySubnet.get(nameOf(s)) || [];
            return fold(t + '/' + nameOf(v) + '/' + nameOf(s), !many, 'subnet',
              [el('b', {}, 'subnet ' + nameOf(s)), ' ', el('span', { class: 'mono' }, s.spec.cidr), el('span', { class: 'muted' }, '  gateway ' + (s.spec.gateway || '–') + ' · ' + fmt(list.length) + ' endpoints')],
              epTable(nameOf(s), list));
          }))));
      ui.ready = 'tenant';
    }
    return c.stop;
  }

  // ---- one endpoint: its place, the policies that select it, its QoS ----
  function selectorMatches(sel, labels) {
    labels = labels || {};
    for (const [k, v] of Object.entries((sel && sel.matchLabels) || {})) if (labels[k] !== v) return false;
    for (const r of (sel && sel.matchExpressions) || []) {
      const has = Object.prototype.hasOwnProperty.call(labels, r.key), v = labels[r.key];
      const ok = { In: has && (r.values || []).includes(v), NotIn: !has || !(r.values || []).includes(v), Exists: has, DoesNotExist: !has }[r.operator];
      if (!ok) return false;
    }
    return true;
  }
  function selectorText(sel) {
    const parts = Object.entries((sel && sel.matchLabels) || {}).map(([k, v]) => k + '=' + v);
    for (const r of (sel && sel.matchExpressions) || []) {
      parts.push({ In: r.key + ' in (' + (r.values || []).join(',') + ')', NotIn: r.key + ' notin (' + (r.values || []).join(',') + ')', Exists: r.key, DoesNotExist: '!' + r.key }[r.operator] || r.key + ' ' + r.operator);
    }
    return parts.length ? parts.join(', ') : 'everything';
  }
  function portText(p) {
    const proto = (p.protocol || 'TCP').toLowerCase();
    if (proto === 'icmp') return 'icmp' + (p.icmpType !== undefined ? ' type ' + p.icmpType + (p.icmpCode !== undefined ? ' code ' + p.icmpCode : '') : '');
    return proto + (p.port ? '/' + p.port + (p.endPort ? '-' + p.endPort : '') : '');
  }
  function ruleText(r, dir) {
    const peers = (r.peers || []).map(p => p.cidr ? p.cidr : 'endpoints {' + selectorText(p.selector) + '}');
    const ports = (r.ports || []).map(portText);
    return 'allow ' + dir + ' ' + (peers.length ? peers.join(', ') : 'anywhere') + (ports.length ? ' on ' + ports.join(', ') : ' on any port');
  }
  const qosText = q => [q.minRate ? 'min ' + q.minRate : '', q.maxRate ? 'max ' + q.maxRate : ''].filter(Boolean).join(', ') || 'none';
  // directionText says what a policy does in one direction: a policy that
  // lists a direction (even empty) isolates it; one that does not leaves
  // it alone (see SecurityPolicy in the API).
  function directionText(spec, dir) {
    if (!(dir in spec)) return null;
    const rules = spec[dir] || [];
    return rules.length ? rules.map(r => el('li', {}, ruleText(r, dir === 'ingress' ? 'from' : 'to'))) : el('li', { class: 'error' }, 'isolates ' + dir + ' and allows nothing');
  }
  // isolation sums up a direction over the policies that select the endpoint.
  function isolation(pols, dir, deny) {
    const isolating = pols.filter(p => dir in p.spec);
    if (!isolating.length) return deny ? 'isolated by the VPC\'s default deny: nothing allowed' : 'not isolated: everything allowed';
    const rules = isolating.reduce((n, p) => n + (p.spec[dir] || []).length, 0);
    return 'isolated by ' + isolating.length + (isolating.length === 1 ? ' policy' : ' policies') + ': ' + (rules ? rules + (rules === 1 ? ' rule allows' : ' rules allow') : 'nothing allowed');
  }
  const ownedBy = o => (o.metadata.ownerReferences || []).map(r => r.kind + ' ' + r.name).join(', ');

  function endpointView(params, t, name) {
    const box = el('div');
    show(el('p', {}, el('a', { href: '#/t/' + encodeURIComponent(t) }, '‹ tenant ' + t)), el('h1', {}, 'Endpoint ', el('span', { class: 'mono', id: 'endpoint-name' }, name)), box);
    const c = collections(tenantResources(t), render);
    function render() {
      const ep = c.cols[2].get(t + '/' + name);
      if (!ep) { fill(box, el('p', { class: 'muted' }, 'No endpoint ' + name + ' (yet).')); return; }
      const sn = c.cols[1].get(t + '/' + ep.spec.subnet);
      const vpcName = sn ? sn.spec.vpc : '', vpc = c.cols[0].get(t + '/' + vpcName);
      const labels = ep.metadata.labels;
      const pols = c.list(3).filter(p => (!p.spec.vpc || p.spec.vpc === vpcName) && selectorMatches(p.spec.selector, labels));
      // The class: its own, else that of the first AppIntent (by name) of
      // its VPC that selects it and owns a class (the controller's rule).
      const intent = ep.spec.qosClass ? null : c.list(5).find(i => i.spec.vpc === vpcName && selectorMatches(i.spec.selector, labels) &&
        ((i.status || {}).objects || []).some(o => o.kind === 'QoSClass'));
      const className = ep.spec.qosClass || (intent ? intent.status.objects.find(o => o.kind === 'QoSClass').name : '');
      const qos = className ? c.cols[4].get(t + '/' + className) : null;
      const deny = vpc && vpc.spec.defaultPolicy === 'deny';
      const kv = pairs => el('dl', { class: 'kv' }, pairs.filter(([, v]) => v !== undefined && v !== '' && v !== null && v !== 0).map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
      const conds = ep.status.conditions || [];
      fill(box,
        el('div', { class: 'panel' }, kv([['VPC', vpcName], ['subnet', ep.spec.subnet], ['host', ep.status.host || ep.spec.host],
          ['IP', ep.status.ip || ep.spec.ip], ['MAC', ep.status.mac || ep.spec.mac], ['VNI', ep.status.vni], ['identity', ep.status.identity], ['netns', ep.status.netns],
          ['phase', el('span', { class: 'phase-' + (ep.status.phase || '') }, ep.status.phase || '')], ['message', ep.status.message],
          ['labels', Object.entries(labels || {}).map(([k, v]) => el('span', { class: 'tag' }, k + '=' + v))],
          ['generation', ep.metadata.generation], ['created', ago(ep.metadata.creationTimestamp)]])),
        conds.length ? [el('h2', {}, 'Programmed'), table(['condition', 'status', 'generation', 'reason', 'message'],
          conds.map(x => el('tr', {}, el('td', {}, x.type), el('td', { class: x.status === 'True' ? 'state-Alive' : x.status === 'False' ? 'error' : '' }, x.status),
            el('td', {}, (x.observedGeneration || '') + (x.observedGeneration && x.observedGeneration < ep.metadata.generation ? ' (stale)' : '')),
            el('td', {}, x.reason || ''), el('td', {}, x.message || ''))))] : null,
        el('h2', {}, 'Quality of service'),
        !className ? el('p', { class: 'muted', id: 'qos' }, 'Best effort (no QoS class).')
          : qos ? el('div', { class: 'panel', id: 'qos' }, kv([['class', nameOf(qos)], ['from', intent ? 'AppIntent ' + nameOf(intent) : 'spec.qosClass'],
            ['min rate', qos.spec.minRate], ['max rate', qos.spec.maxRate], ['priority', qos.spec.priority === undefined ? '4 (default)' : String(qos.spec.priority)], ['DSCP', qos.spec.dscp]]))
            : el('p', { class: 'error', id: 'qos' }, 'QoS class ' + className + ' does not exist: best effort.'),
        vpc && vpc.spec.qos ? el('p', { class: 'muted' }, 'VPC ' + vpcName + ' shares ' + qosText(vpc.spec.qos) + ' per host among its endpoints.') : null,
        el('h2', {}, 'Security policies'),
        el('p', { class: 'muted', id: 'policy-count' }, pols.length + (pols.length === 1 ? ' policy selects' : ' policies select') + ' this endpoint' + (deny ? '; VPC ' + vpcName + ' denies by default.' : '.')),
        el('div', { class: 'panel', id: 'isolation' }, kv([['ingress', isolation(pols, 'ingress', deny)], ['egress', isolation(pols, 'egress', deny)]])),
        pols.map(p => el('div', { class: 'panel policy', 'data-policy': nameOf(p) }, el('b', {}, nameOf(p)), el('span', { class: 'muted' }, '  selects {' + selectorText(p.spec.selector) + '}' + (ownedBy(p) ? ' · from ' + ownedBy(p) : '')),
          el('ul', {}, directionText(p.spec, 'ingress'), directionText(p.spec, 'egress'),
            !('ingress' in p.spec) && !('egress' in p.spec) ? el('li', { class: 'muted' }, 'lists no direction: no effect') : null))),
        el('p', {}, el('a', { href: '#/t/' + encodeURIComponent(t) + '/traces?from=' + encodeURIComponent(name) }, 'Trace from this endpoint'), ' · ',
          el('a', { href: '#/t/' + encodeURIComponent(t) + '/flows?endpoint=' + encodeURIComponent(name) }, 'Its top talkers')));
      ui.ready = 'endpoint';
    }
    return c.stop;
  }

  // ---- traces (Trace objects; see package web for their shape) ----
  function traces(params, t) {
    const box = el('div');
    show(el('h1', {}, 'Traces'), box);
    let c = null, stopped = false;
    call('GET', tpath(t, 'traces')).then(() => {
      if (stopped) return;
      const from = el('input', { name: 'from', required: true, value: params.get('from') || '', placeholder: 'endpoint' });
      const to = el('input', { name: 'to', required: true, placeholder: 'endpoint or IP' });
      const proto = el('select', { name: 'proto' }, ['tcp', 'udp', 'icmp'].map(p => el('option', {}, p)));
      const dport = el('input', { name: 'dport', type: 'number', min: 1, max: 65535, placeholder: '80' });
      const mode = el('select', { name: 'mode' }, ['probe', 'live'].map(p => el('option', {}, p)));
      const msg = el('span', { class: 'error' });
      const form = el('form', { class: 'inline panel', id: 'trace-form' }, el('label', {}, 'from', from), el('label', {}, 'to', to), el('label', {}, 'protocol', proto),
        el('label', {}, 'port', dport), el('label', {}, 'mode', mode), el('button', { type: 'submit' }, 'Trace'), msg);
      form.addEventListener('submit', async ev => {
        ev.preventDefault();
        const name = 'ui-' + Date.now().toString(36);
        const spec = { from: from.value, to: to.value, proto: proto.value, mode: mode.value };
        if (dport.value) spec.dport = +dport.value;
        try {
          await call('POST', tpath(t, 'traces'), { apiVersion: 'weft/v1', kind: 'Trace', metadata: { name, tenant: t }, spec });
          location.hash = '#/t/' + encodeURIComponent(t) + '/traces/' + encodeURIComponent(name);
        } catch (e) { msg.textContent = e.message; }
      });
      const list = el('div');
      fill(box, form, list);
      c = collections(['tenants/' + encodeURIComponent(t) + '/traces'], () => {
        fill(list, table(['trace', 'from', 'to', 'protocol', 'mode', 'phase', 'verdict'], c.list(0).reverse().map(tr => el('tr', {},
          el('td', {}, el('a', { href: '#/t/' + encodeURIComponent(t) + '/traces/' + encodeURIComponent(nameOf(tr)) }, nameOf(tr))),
          el('td', {}, tr.spec.from), el('td', {}, tr.spec.to), el('td', {}, (tr.spec.proto || '') + (tr.spec.dport ? '/' + tr.spec.dport : '')),
          el('td', {}, tr.spec.mode || 'probe'), el('td', {}, (tr.status || {}).phase || ''), el('td', { class: verdictClass((tr.status || {}).verdict) }, (tr.status || {}).verdict || '')))));
        ui.ready = 'traces';
      });
    }, e => { fill(box, unavailable(e, 'Traces')); ui.ready = 'traces'; });
    return () => { stopped = true; if (c) c.stop(); };
  }
  const verdictClass = v => /drop|deny|refuse/i.test(v || '') ? 'error' : /deliver|allow|pass/i.test(v || '') ? 'state-Alive' : '';

  function traceView(params, t, name) {
    const box = el('div');
    show(el('p', {}, el('a', { href: '#/t/' + encodeURIComponent(t) + '/traces' }, '‹ traces')), el('h1', {}, 'Trace ', el('span', { class: 'mono' }, name)), box);
    let c = null;
    call('GET', tpath(t, 'traces')).then(() => {
      c = collections(['tenants/' + encodeURIComponent(t) + '/traces'], () => {
        const tr = c.cols[0].get(t + '/' + name);
        if (!tr) { fill(box, el('p', { class: 'muted' }, 'Trace ' + name + ' is gone (traces expire).')); return; }
        const st = tr.status || {};
        fill(box,
          el('p', {}, el('b', {}, tr.spec.from + ' → ' + tr.spec.to), ' ', (tr.spec.proto || '') + (tr.spec.dport ? '/' + tr.spec.dport : ''), ' · mode ', tr.spec.mode || 'probe',
            ' · ', st.phase || 'Pending', st.verdict ? [' · ', el('span', { class: verdictClass(st.verdict), id: 'trace-verdict' }, st.verdict)] : null, st.reason ? ' — ' + st.reason : ''),
          hopDiagram(st.hops || []),
          table(['#', 'host', 'point', 'verdict', 'detail', 'rule / reason'], (st.hops || []).map((h, i) => el('tr', {}, el('td', {}, i + 1), el('td', { class: 'mono' }, h.host || ''),
            el('td', {}, h.point || ''), el('td', { class: verdictClass(h.verdict) }, h.verdict || ''), el('td', {}, h.detail || '',
              Object.entries(h.attrs || {}).map(([k, v]) => el('span', { class: 'tag' }, k + '=' + v))), el('td', {}, h.rule || h.reason || '')))));
        ui.ready = 'trace';
      });
    }, e => { fill(box, unavailable(e, 'Traces')); ui.ready = 'trace'; });
    return () => { if (c) c.stop(); };
  }

  // hopDiagram draws a path top to bottom, one column per host, one row
  // per hop; the drop (if any) in red, the delivery in green, and the
  // crossings between hosts dashed.
  function hopDiagram(hops) {
    const lanes = [];
    for (const h of hops) if (!lanes.includes(h.host || '')) lanes.push(h.host || '');
    const W = 300, H = 50, GX = 40, GY = 14, TOP = 28;
    const width = lanes.length * (W + GX), height = TOP + hops.length * (H + GY);
    const s = svg('svg', { width, height, viewBox: '0 0 ' + width + ' ' + height, id: 'hop-diagram', role: 'img' });
    s.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#667085' }))));
    lanes.forEach((l, i) => {
      const x = i * (W + GX);
      s.append(svg('rect', { x, y: 0, width: W + GX / 2, height, fill: i % 2 ? '#f3f5f8' : '#fafbfc' }),
        svg('text', { x: x + 8, y: 18, 'font-size': 13, 'font-weight': 'bold', fill: '#3d4757' }, 'host ' + (l || '?')));
    });
    const pos = hops.map((h, i) => ({ x: GX / 4 + lanes.indexOf(h.host || '') * (W + GX), y: TOP + i * (H + GY) }));
    hops.forEach((h, i) => {
      const p = pos[i];
      if (i > 0) {
        const q = pos[i - 1], cross = q.x !== p.x;
        s.append(svg('line', { x1: q.x + W / 2, y1: q.y + H, x2: p.x + W / 2, y2: p.y - 2, stroke: '#667085', 'stroke-width': 1.5,
          'stroke-dasharray': cross ? '5 4' : 'none', 'marker-end': 'url(#arrow)' }));
      }
      const drop = /drop/i.test(h.verdict || '') || h.point === 'drop', done = /deliver/i.test(h.verdict || '') || h.point === 'deliver';
      s.append(svg('g', { class: 'hop', 'data-point': h.point || '' },
        svg('title', {}, [h.point, h.verdict, h.detail, h.rule, h.reason, ...Object.entries(h.attrs || {}).map(([k, v]) => k + '=' + v)].filter(Boolean).join('\n')),
        svg('rect', { x: p.x, y: p.y, width: W, height: H, rx: 7, fill: drop ? '#fde5e3' : done ? '#e2f4e9' : '#fff', stroke: drop ? '#d8403a' : done ? '#2e9e5b' : '#9aa4b2', 'stroke-width': drop || done ? 2 : 1 }),
        svg('text', { x: p.x + 8, y: p.y + 18, 'font-size': 12, fill: '#1d2430' }, svg('tspan', { 'font-weight': 'bold' }, (i + 1) + '. ' + (h.point || 'hop')),
          svg('tspan', { fill: drop ? '#b3261e' : '#3d4757' }, clip(h.verdict ? '  ' + h.verdict + (h.rule ? ' · ' + h.rule : h.reason ? ' · ' + h.reason : '') : '', 40 - (h.point || 'hop').length))),
        svg('text', { x: p.x + 8, y: p.y + 38, 'font-size': 11, fill: '#667085' }, clip(h.detail || '', 46))));
    });
    return el('div', { class: 'hops' }, hops.length ? s : el('p', { class: 'muted' }, 'No hops reported yet.'));
  }
  const clip = (s, n) => s.length > n ? s.slice(0, n - 1) + '…' : s;

  // ---- captures (Capture objects) ----
  function captures(params, t) {
    const box = el('div');
    show(el('h1', {}, 'Captures'), box);
    let c = null, stopped = false;
    call('GET', tpath(t, 'captures')).then(() => {
      if (stopped) return;
      c = collections(['tenants/' + encodeURIComponent(t) + '/captures'], () => {
        fill(box, el('p', { class: 'muted' }, 'Start one with ', el('code', {}, 'weft capture --tenant ' + t + ' --endpoint E -w out.pcapng'), '.'),
          table(['capture', 'selects', 'filter', 'phase', 'packets', 'bytes', 'hosts', 'expires', ''], c.list(0).map(cp => {
            const sp = cp.spec || {}, st = cp.status || {};
            const sel = sp.endpoint ? 'endpoint ' + sp.endpoint : sp.vpc ? 'VPC ' + sp.vpc : sp.selector ? 'labels {' + selectorText(sp.selector) + '}' : '';
            const ready = st.packets > 0 || st.phase === 'Completed';
            return el('tr', { 'data-capture': nameOf(cp) }, el('td', { class: 'mono' }, nameOf(cp)), el('td', {}, sel + (sp.direction ? ' (' + sp.direction + ')' : '') + (sp.droppedOnly ? ' dropped only' : '')),
              el('td', { class: 'mono' }, sp.filter || ''), el('td', {}, st.phase || ''), el('td', {}, fmt(st.packets)), el('td', {}, bytes(st.bytes)),
              el('td', {}, (st.hosts || []).join(', ')), el('td', {}, until(st.expires)),
              el('td', {}, ready ? el('a', { href: tpath(t, 'captures', nameOf(cp)) + '/pcapng', download: nameOf(cp) + '.pcapng', class: 'download' }, 'download pcapng') : ''));
          })));
        ui.ready = 'captures';
      });
    }, e => { fill(box, unavailable(e, 'Captures')); ui.ready = 'captures'; });
    return () => { stopped = true; if (c) c.stop(); };
  }

  // ---- flows: top talkers, polled (flow records are not objects) ----
  function flows(params, t) {
    const endpoint = params.get('endpoint') || '';
    const box = el('div');
    show(el('h1', {}, 'Top talkers', endpoint ? [' of ', el('span', { class: 'mono' }, endpoint)] : ''), box);
    let timer = null, stopped = false;
    async function load() {
      let data;
      try {
        data = await call('GET', tpath(t, 'flows') + '?' + new URLSearchParams(Object.entries({ top: 10, endpoint }).filter(([, v]) => v)));
      } catch (e) { fill(box, unavailable(e, 'Flow statistics')); ui.ready = 'flows'; return; }
      const items = data.items || [];
      const most = Math.max(1, ...items.map(f => f.bytes || 0));
      const end = (ep, ip, port) => (ep ? ep + ' ' : '') + '(' + ip + (port ? ':' + port : '') + ')';
      fill(box, table(['#', 'source', 'destination', 'protocol', 'bytes', '', 'packets', 'verdict', 'duration'], items.map((f, i) => {
        const bar = el('div', { class: 'bar' });
        bar.style.width = Math.round(200 * (f.bytes || 0) / most) + 'px';
        return el('tr', { class: 'flow' }, el('td', {}, i + 1), el('td', { class: 'mono' }, end(f.srcEndpoint, f.src, f.sport)), el('td', { class: 'mono' }, end(f.dstEndpoint, f.dst, f.dport)),
          el('td', {}, f.proto || ''), el('td', {}, bytes(f.bytes)), el('td', {}, bar), el('td', {}, fmt(f.packets)), el('td', { class: verdictClass(f.verdict) }, f.verdict || ''), el('td', {}, f.duration || ''));
      })), el('p', { class: 'muted' }, 'Sampled flow summaries; refreshed every 5 s.'));
      ui.ready = 'flows';
      if (!stopped) timer = setTimeout(load, 5000);
    }
    load();
    return () => { stopped = true; clearTimeout(timer); };
  }

  start();
})();
