// The alerts dashboard page: polls /api/state and draws it. Plain JS, no dependencies.
// Safety rule: data from alerts is only ever inserted with textContent or as attribute values
// (never innerHTML / insertAdjacentHTML / document.write / eval), and class names derived from
// data go through a whitelist. Lookups keyed by data use own properties only ('__proto__' or
// 'constructor' as a name must find nothing), and time formatting never throws (a date outside
// what Date can hold shows as '–'), so one odd value cannot stop a section from drawing.
'use strict';

(function () {
  const POLL_MS = 1500;
  const SEVERITIES = ['critical', 'high', 'medium', 'low', 'unknown'];
  const KINDS = ['network_anomaly', 'volume_anomaly', 'host_attack'];
  const KIND_LABEL = { network_anomaly: 'network anomaly', volume_anomaly: 'volume anomaly',
                       host_attack: 'host attack', '(other)': 'other' };
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#4c9bff', '#2ec4b6', '#b67cff', '#f2c53d', '#ff8f2e', '#ff4d5e', '#8da2b8'];

  const state = { data: null, failures: 0, paused: false, pausedNew: 0, shownIds: new Set(),
                  selected: null, lastRecent: [] };

  // ---------- small helpers ----------
  const $ = (id) => document.getElementById(id);
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  const COLORS = {};
  function colors() {
    if (!COLORS.ready) {
      for (const s of SEVERITIES) COLORS[s] = cssVar('--' + s);
      COLORS.network_anomaly = cssVar('--kind-network');
      COLORS.host_attack = cssVar('--kind-host');
      COLORS.volume_anomaly = cssVar('--kind-volume');
      COLORS['(other)'] = cssVar('--kind-other');
      COLORS.ready = true;
    }
    return COLORS;
  }
  function el(tag, opts, text) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.cls) node.className = opts.cls;
      if (opts.title != null) node.title = String(opts.title);
      if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) node.setAttribute(k, String(v));
    }
    if (text != null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text != null) node.textContent = String(text);
    return node;
  }
  function setText(id, text) { const n = $(id); if (n) n.textContent = text == null ? '' : String(text); }
  const sevClass = (s) => 'sev-' + (SEVERITIES.includes(s) ? s : 'unknown');
  const kindClass = (k) => 'kind-' + (KINDS.includes(k) ? k : 'other');
  const own = (obj, key) => (obj != null && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined);
  const kindLabel = (k) => own(KIND_LABEL, k) || String(k);

  function pad(n) { return String(n).padStart(2, '0'); }
  // A Date for Unix seconds, or null when there is none (null, NaN, beyond Date's range).
  function toDate(t) {
    if (typeof t !== 'number' || !Number.isFinite(t)) return null;
    const d = new Date(t * 1000);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  function hhmmss(t) {
    const d = toDate(t);
    if (!d) return '–';
    return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
  }
  function hhmm(t) { const d = toDate(t); return d ? pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) : '–'; }
  function isoUtc(t) { const d = toDate(t); return d ? d.toISOString().replace('T', ' ').replace('Z', ' UTC') : '–'; }
  function ago(t, now) {
    if (typeof t !== 'number' || !Number.isFinite(t)) return 'never';
    const s = Math.max(0, Math.round(now - t));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return (s / 3600).toFixed(1) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }
  const intFmt = new Intl.NumberFormat('en-US');
  function fmtInt(n) { return typeof n !== 'number' || !Number.isFinite(n) ? '–' : intFmt.format(Math.round(n)); }
  function fmtRate(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
    if (n >= 100) return intFmt.format(Math.round(n));
    return n.toFixed(n >= 10 ? 1 : 2);
  }
  function fmtNum(n, digits) { return typeof n !== 'number' || !Number.isFinite(n) ? '–' : n.toFixed(digits); }
  function sum(a) { let s = 0; for (const v of a) s += v || 0; return s; }

  // Round axis maximum and ticks: 1, 2, 2.5, 5 x 10^k.
  function niceTicks(max, count) {
    if (!(max > 0)) max = 1;
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = mag;
    for (const m of [1, 2, 2.5, 5, 10]) { if (m * mag >= raw) { step = m * mag; break; } }
    if (step < 1 && max >= 1) step = Math.max(step, 1);
    const top = Math.ceil(max / step) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(+v.toFixed(6));
    return { top, ticks };
  }
  function tickLabel(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + 'M';
    if (v >= 1e4) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + 'k';
    return Number.isInteger(v) ? intFmt.format(v) : v.toFixed(1);
  }

  function legend(id, names, colorOf, labelOf) {
    const box = $(id);
    if (!box) return;
    const key = names.join('|');
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren();
    for (const name of names) {
      const item = el('span');
      const swatch = el('i');
      swatch.style.background = colorOf(name);
      item.append(swatch, document.createTextNode(labelOf ? labelOf(name) : name));
      box.append(item);
    }
  }

  function frame(node, fallbackHeight) {
    const width = Math.max(200, Math.floor(node.getBoundingClientRect().width || 600));
    const height = Math.floor(node.getBoundingClientRect().height || fallbackHeight);
    node.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    node.replaceChildren();
    return { width, height, m: { l: 46, r: 12, t: 10, b: 30 } };
  }

  function yAxis(node, f, ticks, top, label) {
    const { width, height, m } = f;
    const ph = height - m.t - m.b;
    for (const v of ticks) {
      const y = m.t + ph - (v / top) * ph;
      node.append(svg('line', { x1: m.l, x2: width - m.r, y1: y, y2: y, class: 'grid-line' }));
      node.append(svg('text', { x: m.l - 6, y: y + 3.5, 'text-anchor': 'end' }, tickLabel(v)));
    }
    if (label) {
      node.append(svg('text', { class: 'axis-title', x: 11, y: m.t + ph / 2, 'text-anchor': 'middle',
                                transform: 'rotate(-90 11 ' + (m.t + ph / 2) + ')' }, label));
    }
    node.append(svg('line', { x1: m.l, x2: width - m.r, y1: m.t + ph, y2: m.t + ph, class: 'axis-line' }));
  }

  // Stacked bars, one per minute: data = {minutes: [t...], series: {name: [counts]}}.
  function stackedBars(node, data, names, colorOf, opts) {
    const f = frame(node, opts.height || 200);
    const { width, height, m } = f;
    const minutes = data.minutes || [];
    const n = minutes.length;
    const totals = minutes.map((_, i) => sum(names.map((s) => (data.series[s] || [])[i])));
    const { top, ticks } = niceTicks(Math.max(1, ...totals), 4);
    yAxis(node, f, ticks, top, opts.yLabel);
    const pw = width - m.l - m.r, ph = height - m.t - m.b;
    const bw = pw / Math.max(1, n);
    const gap = bw > 6 ? 1.5 : 0.5;
    for (let i = 0; i < n; i++) {
      let y = m.t + ph;
      const parts = [];
      for (const s of names) {
        const v = (data.series[s] || [])[i] || 0;
        if (!v) continue;
        const h = (v / top) * ph;
        y -= h;
        node.append(svg('rect', { x: m.l + i * bw + gap / 2, y: y, width: Math.max(0.5, bw - gap),
                                  height: Math.max(0.5, h), fill: colorOf(s), rx: 1 }));
        parts.push((opts.labelOf ? opts.labelOf(s) : s) + ': ' + fmtInt(v));
      }
      // Hover target over the whole column, with a native tooltip (plain text).
      const hit = svg('rect', { x: m.l + i * bw, y: m.t, width: bw, height: ph, fill: 'transparent' });
      hit.append(svg('title', null, hhmm(minutes[i]) + ' UTC · ' + fmtInt(totals[i]) +
                     (parts.length ? ' (' + parts.join(', ') + ')' : '')));
      node.append(hit);
    }
    for (let i = 0; i < n; i++) {
      const t = minutes[i];
      if (Math.round(t / 60) % (opts.tickEvery || 10) !== 0 && i !== n - 1) continue;
      if (i === n - 1 && Math.round(t / 60) % (opts.tickEvery || 10) !== 0 &&
          (Math.round(t / 60) % (opts.tickEvery || 10)) < 4) continue;
      const x = m.l + i * bw + bw / 2;
      node.append(svg('line', { x1: x, x2: x, y1: m.t + ph, y2: m.t + ph + 4, class: 'axis-line' }));
      node.append(svg('text', { x: x, y: height - m.b + 17, 'text-anchor': 'middle' },
                      i === n - 1 ? 'now' : hhmm(t)));
    }
    if (!sum(totals)) {
      node.append(svg('text', { class: 'nodata', x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' },
                      opts.empty || 'nothing in the last hour'));
    }
  }

  // Lines over time: points = [[t, {name: value}], ...] over the last `span` seconds.
  function lines(node, points, names, colorOf, opts) {
    const f = frame(node, opts.height || 170);
    const { width, height, m } = f;
    const now = opts.now, span = opts.span;
    const t0 = now - span;
    const visible = points.filter((p) => p[0] >= t0);
    let max = 0;
    for (const p of visible) for (const s of names) max = Math.max(max, p[1][s] || 0);
    const { top, ticks } = niceTicks(Math.max(max, 1), 4);
    yAxis(node, f, ticks, top, opts.yLabel);
    const pw = width - m.l - m.r, ph = height - m.t - m.b;
    const xOf = (t) => m.l + ((t - t0) / span) * pw;
    const yOf = (v) => m.t + ph - (v / top) * ph;
    const stepS = opts.tickEvery || 300;
    for (let t = Math.ceil(t0 / stepS) * stepS; t <= now; t += stepS) {
      const x = xOf(t);
      node.append(svg('line', { x1: x, x2: x, y1: m.t + ph, y2: m.t + ph + 4, class: 'axis-line' }));
      node.append(svg('text', { x: x, y: height - m.b + 17, 'text-anchor': 'middle' }, hhmm(t)));
    }
    for (const s of names) {
      const pts = visible.map((p) => xOf(p[0]).toFixed(1) + ',' + yOf(p[1][s] || 0).toFixed(1));
      if (pts.length < 2) continue;
      const line = svg('polyline', { points: pts.join(' '), fill: 'none', stroke: colorOf(s),
                                     'stroke-width': 1.8, 'stroke-linejoin': 'round' });
      line.append(svg('title', null, s));
      node.append(line);
    }
    if (visible.length < 2) {
      node.append(svg('text', { class: 'nodata', x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' },
                      opts.empty || 'no samples yet'));
    }
  }

  function hbars(id, items, opts) {
    const box = $(id);
    box.replaceChildren();
    if (!items.length) { box.append(el('p', { cls: 'empty' }, opts && opts.empty || 'none in the last hour')); return; }
    const max = Math.max(...items.map((x) => x[1]), 1);
    for (const [name, count, cls] of items) {
      const row = el('div', { cls: 'hbar' + (cls ? ' ' + cls : ''), title: String(name) + ': ' + fmtInt(count) });
      const track = el('div', { cls: 'track' });
      const fill = el('div', { cls: 'fill' });
      fill.style.width = (100 * count / max).toFixed(1) + '%';
      track.append(fill);
      row.append(el('span', { cls: 'name' }, name), track, el('span', { cls: 'count' }, fmtInt(count)));
      box.append(row);
    }
  }

  function cell(tr, text, cls, title) {
    const td = el('td', { cls: cls, title: title == null ? (text == null ? null : text) : title },
                  text == null || text === '' ? '–' : text);
    tr.append(td);
    return td;
  }

  function badge(text, cls) { return el('span', { cls: 'badge ' + cls }, text); }

  // ---------- sections ----------
  function renderKpis(s) {
    const a = s.alerts, now = s.now;
    setText('v-alerts-min', fmtInt(a.last_minute));
    setText('f-alerts-min', fmtInt(a.last_5_minutes) + ' in the last 5 min');
    $('kpi-alerts-min').className = 'kpi ' + (a.last_minute > 0 ? 'alerting' : 'good');

    setText('v-alerts-hour', fmtInt(a.last_hour));
    const chips = $('f-alerts-hour');
    chips.replaceChildren();
    for (const sev of ['critical', 'high', 'medium', 'low']) {
      const chip = el('span', { cls: 'chip ' + sevClass(sev), title: sev }, fmtInt(a.last_hour_by_severity[sev] || 0));
      chips.append(chip);
    }
    const crit = (a.last_hour_by_severity.critical || 0);
    $('kpi-alerts-hour').className = 'kpi ' + (crit > 0 ? 'alerting' : a.last_hour > 0 ? 'warning' : 'good');

    setText('v-attacks', fmtInt(s.attacks.last_hour));
    setText('f-attacks', fmtInt(s.attacks.total) + ' read since start');
    $('kpi-attacks').className = 'kpi ' + (s.attacks.last_hour > 0 ? 'alerting' : 'good');

    const kafka = (s.feeds.kafka || {});
    const rates = s.input.rates || {};
    const topics = Object.keys(rates);
    const v = $('v-input');
    v.replaceChildren(document.createTextNode(topics.length ? fmtRate(sum(Object.values(rates))) : '–'),
                      el('span', { cls: 'unit' }, 'msg/s'));
    setText('f-input', topics.length ? topics.map((t) => t + ' ' + fmtRate(rates[t])).join(' · ')
      : (s.info.bootstrap_servers ? 'waiting for the input topics' : 'Kafka off'));
    $('kpi-input').className = 'kpi info';

    const lag = kafka.stream_lag;
    const alertsFeed = s.feeds.alerts || {};
    if (s.info.stream_group_id) {
      setText('v-lag', lag == null ? '–' : fmtInt(lag));
      $('kpi-lag').className = 'kpi ' + (lag == null ? '' : lag > 10000 ? 'alerting' : lag > 1000 ? 'warning' : 'good');
    } else {
      setText('v-lag', 'n/a');
      $('kpi-lag').className = 'kpi';
    }
    setText('f-lag', !s.info.bootstrap_servers ? 'Kafka off'
      : (s.info.stream_group_id ? 'group ' + s.info.stream_group_id : 'set --stream_group_id') +
        ' · dashboard ' + (alertsFeed.lag == null ? '–' : fmtInt(alertsFeed.lag)) + ' behind');

    const dl = s.dead_letters;
    setText('v-dead', fmtInt(dl.last_hour));
    setText('f-dead', fmtInt(dl.last_5_minutes) + ' in the last 5 min');
    $('kpi-dead').className = 'kpi ' + (dl.last_5_minutes > 0 ? 'alerting' : dl.last_hour > 0 ? 'warning' : 'good');

    const last = a.last_received_at;
    setText('v-last', last == null ? '–' : ago(last, now));
    setText('f-last', a.last_processing_time == null ? 'no alert yet'
      : 'processed ' + hhmmss(a.last_processing_time) + ' UTC');
    $('kpi-last').className = 'kpi ' + (last == null ? '' : now - last < 120 ? 'alerting' : 'info');
  }

  function renderCharts(s) {
    const c = colors();
    const a = s.alerts;
    const kindNames = Object.keys(a.per_minute.series);
    legend('legend-kind', kindNames, (k) => c[k] || c['(other)'], kindLabel);
    stackedBars($('chart-kind'), a.per_minute, kindNames, (k) => c[k] || c['(other)'],
                { yLabel: 'alerts / min', labelOf: kindLabel, empty: 'no alerts in the last hour' });

    const sevItems = SEVERITIES.filter((x) => x !== 'unknown' || a.last_hour_by_severity.unknown)
      .map((x) => [x, a.last_hour_by_severity[x] || 0, sevClass(x)]);
    hbars('sev-bars', sevItems);
    const th = s.severity_thresholds || {};
    setText('sev-legend', 'Severity from the detector score: critical ≥ ' + th.critical + ', high ≥ ' + th.high +
            ', medium ≥ ' + th.medium + ', else low. Host attack events (both detectors agree) are at least high.');

    stackedBars($('chart-attacks'), s.attacks.per_minute, ['attacks'], () => c.host_attack,
                { yLabel: 'events / min', height: 170, empty: 'no attack events in the last hour' });

    const inputNames = s.info.input_topics || [];
    const colorOfTopic = (t) => PALETTE[inputNames.indexOf(t) % PALETTE.length] || PALETTE[6];
    legend('legend-input', inputNames, colorOfTopic);
    const history = s.input.history || [];
    // Up to 15 minutes; a young dashboard shows what it has, over at least 2 minutes.
    const span = history.length ? Math.min(900, Math.max(120, s.now - history[0][0] + 5)) : 900;
    lines($('chart-input'), history, inputNames, colorOfTopic,
          { now: s.now, span: span, yLabel: 'msg / s', tickEvery: span <= 300 ? 60 : 300,
            empty: s.info.bootstrap_servers ? 'collecting samples…' : 'Kafka off' });

    const deadNames = Object.keys(s.dead_letters.per_minute.series);
    const colorOfStream = (t) => PALETTE[(deadNames.indexOf(t) + 3) % PALETTE.length];
    legend('legend-dead', deadNames, colorOfStream);
    stackedBars($('chart-dead'), s.dead_letters.per_minute, deadNames, colorOfStream,
                { yLabel: 'records / min', height: 170, empty: 'no dead letters in the last hour' });
  }

  function renderTops(s) {
    const top = s.alerts.top;
    hbars('top-machine', top.machine.map(([k, n]) => ['machine ' + k, n]));
    hbars('top-program', top.program.map(([k, n]) => [k, n]));
    hbars('top-service', top.service.map(([k, n]) => [k, n]));
  }

  function matches(row) {
    const q = $('filter').value.trim().toLowerCase();
    const kind = $('filter-kind').value;
    const sev = $('filter-sev').value;
    if (kind && row.kind !== kind) return false;
    if (sev && SEVERITIES.indexOf(row.severity) > SEVERITIES.indexOf(sev)) return false;
    if (!q) return true;
    for (const k of ['event_id', 'kind', 'machine', 'program', 'service', 'protocol_type', 'site',
                     'model_version', 'details_preview', 'severity']) {
      if (row[k] != null && String(row[k]).toLowerCase().includes(q)) return true;
    }
    return false;
  }

  function renderAlerts(recent, force) {
    if (state.paused && !force) {
      const fresh = recent.filter((r) => !state.shownIds.has(r.event_id)).length;
      setText('alerts-count', 'paused · ' + fmtInt(fresh) + ' new since');
      return;
    }
    const body = $('alerts-table').tBodies[0];
    const rows = recent.filter(matches);
    const firstRender = state.shownIds.size === 0;
    const shown = new Set();
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      try { frag.append(alertRow(r, firstRender)); } catch (e) { console.warn('alert row', e); }
      shown.add(r.event_id);
    }
    body.replaceChildren(frag);
    state.shownIds = new Set(recent.map((r) => r.event_id));
    $('alerts-empty').hidden = rows.length > 0;
    setText('alerts-empty', recent.length ? 'No alert matches the filter.' : 'Waiting for alerts…');
    const a = state.data ? state.data.alerts : null;
    setText('alerts-count', fmtInt(rows.length) + ' shown of the latest ' + fmtInt(recent.length) +
            (a ? ' · ' + fmtInt(a.buffered) + ' buffered' : ''));
  }

  function alertRow(r, firstRender) {
      const tr = el('tr', { cls: sevClass(r.severity) });
      tr.dataset.id = r.event_id;
      if (r.key != null) tr.dataset.key = r.key;
      if (!firstRender && !state.shownIds.has(r.event_id)) tr.classList.add('fresh');
      if (state.selected === (r.key != null ? r.key : r.event_id)) tr.classList.add('selected');
      const when = r.processing_time != null ? r.processing_time : r.received_at;
      cell(tr, hhmmss(when), 'mono', 'processed ' + isoUtc(r.processing_time) + '\nevent time ' + isoUtc(r.event_time));
      const sev = el('td'); sev.append(badge(r.severity, sevClass(r.severity))); tr.append(sev);
      const kind = el('td'); kind.append(el('span', { cls: 'kind ' + kindClass(r.kind) }, kindLabel(r.kind))); tr.append(kind);
      cell(tr, fmtNum(r.score, 3), 'num mono');
      cell(tr, r.machine, 'mono');
      cell(tr, r.program, 'mono');
      cell(tr, [r.service, r.protocol_type].filter((x) => x != null && x !== '').join(' / '), 'mono');
      cell(tr, r.site);
      cell(tr, r.details_preview, 'details', (r.model_version ? 'model ' + r.model_version + '\n' : '') +
           (r.details_preview || ''));
      return tr;
  }

  function renderAttacks(s) {
    const body = $('attacks-table').tBodies[0];
    const frag = document.createDocumentFragment();
    for (const r of s.attacks.recent) {
      const tr = el('tr', { cls: 'sev-high' });
      cell(tr, hhmmss(r.processing_time), 'mono', 'event time ' + isoUtc(r.event_time) + '\nid ' + r.event_id);
      cell(tr, r.machine, 'mono');
      cell(tr, r.program, 'mono', r.command);
      cell(tr, fmtNum(r.process_score, 3), 'num mono');
      cell(tr, fmtNum(r.memory_score, 3), 'num mono');
      cell(tr, fmtNum(r.delta_time, 1), 'num mono');
      cell(tr, fmtNum(r.cpu, 1), 'num mono');
      cell(tr, fmtNum(r.mem, 1), 'num mono');
      cell(tr, r.site);
      frag.append(tr);
    }
    body.replaceChildren(frag);
    $('attacks-empty').hidden = s.attacks.recent.length > 0;
  }

  // Why, as a list: "src_bytes = 54,540 (normal 0 - 1,032)". Text nodes only (never HTML).
  function reasonList(reasons) {
    const list = el('ul', { cls: 'reasons' });
    for (const r of reasons || []) {
      const value = typeof r.value === 'number' ? fmtInt(r.value) : (r.value == null ? '–' : String(r.value));
      list.append(el('li', null, r.feature + ' = ' + value + (r.normal ? ' (normal ' + r.normal + ')' : '')));
    }
    return list;
  }

  function renderIncidents(s) {
    const inc = s.incidents;
    if (!inc || inc.error) return;
    const body = $('incidents-table').tBodies[0];
    const frag = document.createDocumentFragment();
    for (const r of inc.recent) {
      const tr = el('tr', { cls: 'sev-' + (own({ high: 1, medium: 1, low: 1 }, r.severity) ? r.severity : 'unknown') });
      tr.dataset.id = r.incident_id;
      cell(tr, r.status, 'status-' + r.status);
      const kind = cell(tr, kindLabel(r.kind), 'kind kind-' + r.kind);
      kind.title = 'incident ' + r.incident_id + ' (update ' + r.update_seq + ')';
      cell(tr, r.kind === 'host_attack' ? 'machine ' + r.machine + ' · ' + (r.program || '–')
           : [r.protocol_type, r.service, r.flag].filter((x) => x != null).join(' / ') || 'all traffic', 'mono');
      cell(tr, hhmmss(r.first_seen), 'mono', isoUtc(r.first_seen));
      cell(tr, hhmmss(r.last_seen), 'mono', isoUtc(r.last_seen));
      cell(tr, fmtInt(r.count), 'num mono');
      cell(tr, r.severity);
      const why = el('td', { cls: 'why' });
      why.append(reasonList(r.reasons.slice(0, 3)));
      tr.append(why);
      cell(tr, r.site);
      frag.append(tr);
    }
    body.replaceChildren(frag);
    setText('incidents-open', fmtInt(inc.open) + ' open of ' + fmtInt(inc.known));
    $('incidents-empty').hidden = inc.recent.length > 0;
  }

  function renderHealth(s) {
    const kafka = s.feeds.kafka || {};
    const topicsBody = $('topics-table').tBodies[0];
    topicsBody.replaceChildren();
    const topics = kafka.topics || {};
    for (const name of s.info.input_topics || []) {
      const t = topics[name] || {};
      const tr = el('tr');
      cell(tr, name, 'mono');
      if (t.missing) {
        const td = el('td', { attrs: { colspan: 4 }, cls: 'muted' }, 'topic does not exist (yet)');
        tr.append(td);
      } else {
        cell(tr, fmtInt(t.partitions), 'num');
        cell(tr, fmtRate(t.rate), 'num');
        cell(tr, fmtInt(t.end_offset), 'num');
        cell(tr, s.info.stream_group_id ? fmtInt(t.lag) : 'n/a', 'num');
      }
      topicsBody.append(tr);
    }
    if (!(s.info.input_topics || []).length) {
      const tr = el('tr'); tr.append(el('td', { attrs: { colspan: 5 }, cls: 'muted' }, 'Kafka off')); topicsBody.append(tr);
    }

    const deadBody = $('dead-table').tBodies[0];
    deadBody.replaceChildren();
    for (const r of s.dead_letters.recent.slice(0, 6)) {
      const tr = el('tr');
      cell(tr, hhmmss(r.failed_at), 'mono', isoUtc(r.failed_at));
      cell(tr, r.stream);
      cell(tr, r.stage, 'mono');
      cell(tr, r.error, 'details', (r.error || '') + (r.payload_preview ? '\npayload: ' + r.payload_preview : '') +
           (r.source ? '\nfrom ' + r.source + ' partition ' + r.partition + ' offset ' + r.offset : ''));
      deadBody.append(tr);
    }
    if (!s.dead_letters.recent.length) {
      const tr = el('tr'); tr.append(el('td', { attrs: { colspan: 4 }, cls: 'muted' }, 'No dead letters read.')); deadBody.append(tr);
    }
  }

  function inUseVersions(modelVersions) {
    const used = Object.create(null);
    const net = own(modelVersions, 'network_anomaly');
    if (net) used.network = { version: net.version, seen: net.seen_at };
    const host = own(modelVersions, 'host_attack');
    if (host) {
      for (const part of String(host.version).split(',')) {
        const [det, ver] = part.split(':');
        if (det && ver) used[det.trim()] = { version: ver.trim(), seen: host.seen_at };
      }
    }
    return used;
  }

  // Registry versions are UTC timestamps, 20261123T190000123456Z: shown as 2026-11-23 19:00:00.
  function shortVersion(v) {
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\d*Z$/.exec(String(v));
    return m ? m[1] + '-' + m[2] + '-' + m[3] + ' ' + m[4] + ':' + m[5] + ':' + m[6] : String(v);
  }

  function renderModels(s) {
    const models = (s.feeds.models || {});
    const detectors = models.detectors || {};
    setText('models-dir', s.info.model_dir ? 'registry ' + s.info.model_dir : '');
    const used = inUseVersions(s.alerts.model_versions || {});
    const body = $('models-table').tBodies[0];
    body.replaceChildren();
    for (const det of ['network', 'process', 'memory']) {
      const latest = own(detectors, det);
      const inUse = used[det];
      const tr = el('tr');
      cell(tr, det);
      const useTd = el('td', { cls: 'mono', title: inUse ? inUse.version : null });
      useTd.append(document.createTextNode(inUse ? shortVersion(inUse.version) : '–'));
      if (inUse && latest && latest.version) {
        useTd.append(document.createTextNode(' '));
        useTd.append(inUse.version === latest.version ? badge('current', 'state-ok')
          : inUse.version < latest.version ? badge('newer published', 'state-warn') : badge('not in registry', 'state-warn'));
      }
      tr.append(useTd);
      cell(tr, latest ? shortVersion(latest.version) : (models.state === 'ok' ? 'none published' : '–'), 'mono',
           latest ? latest.version + (latest.created ? '\ncreated ' + latest.created : '') : null);
      cell(tr, latest && latest.training_rows != null ? fmtInt(latest.training_rows) + ' rows' : '–');
      const m = (latest && latest.metrics) || {};
      const parts = [];
      if (m.roc_auc != null) parts.push('ROC AUC ' + m.roc_auc.toFixed(3));
      if (m.pr_auc != null) parts.push('PR AUC ' + m.pr_auc.toFixed(3));
      if (m.f1 != null) parts.push('F1 ' + m.f1.toFixed(3));
      if (m.recall != null) parts.push('recall ' + m.recall.toFixed(3));
      if (latest && latest.threshold != null) parts.push('threshold ' + latest.threshold.toFixed(3));
      if (latest && latest.refused_newer) parts.push('newer folder ' + latest.refused_newer + ' refused (not signed or not verifying)');
      cell(tr, parts.length ? parts.join(' · ') : (latest && latest.error ? latest.error : '–'));
      body.append(tr);
    }
  }

  const FEED_LABEL = { alerts: 'Kafka · alerts topic', kafka: 'Kafka · input topics', parquet: 'Parquet outputs', models: 'Model registry' };
  function stateClass(st) {
    if (['ok', 'consuming'].includes(st)) return 'state-ok';
    if (['starting', 'connecting', 'waiting for topic'].includes(st)) return 'state-warn';
    return 'state-bad';
  }
  function renderFeeds(s) {
    const body = $('feeds-table').tBodies[0];
    body.replaceChildren();
    for (const [name, f] of Object.entries(s.feeds)) {
      const tr = el('tr');
      cell(tr, own(FEED_LABEL, name) || name);
      const st = el('td'); st.append(badge(f.state || '?', stateClass(f.state))); tr.append(st);
      cell(tr, ago(f.last_ok, s.now));
      let detail = '';
      if (name === 'alerts') detail = 'topic ' + f.topic + ' · ' + fmtInt(f.partitions) + ' partitions · ' + fmtInt(f.messages) + ' messages' + (f.invalid ? ' · ' + fmtInt(f.invalid) + ' rejected' : '');
      if (name === 'kafka') detail = (f.brokers != null ? fmtInt(f.brokers) + ' broker(s)' : '') + (s.info.bootstrap_servers ? ' at ' + s.info.bootstrap_servers : '');
      if (name === 'parquet') detail = (f.files ? 'files read: ' + Object.entries(f.files).map(([k, v]) => k + ' ' + fmtInt(v)).join(', ') : '') +
        (f.too_large ? ' · ' + fmtInt(f.too_large) + ' over the limits' : '') + (f.unreadable ? ' · ' + fmtInt(f.unreadable) + ' unreadable' : '') + ' · ' + (f.output || '');
      if (name === 'models') detail = f.model_dir || '';
      const recentError = f.last_error && (f.last_ok == null || f.last_error_at >= f.last_ok - 30);
      const td = cell(tr, recentError ? f.last_error : detail, recentError ? 'wrap' : 'details',
                      (f.last_error ? 'last error ' + ago(f.last_error_at, s.now) + ': ' + f.last_error + '\n' : '') + detail);
      if (recentError) td.classList.add('muted');
      body.append(tr);
    }
    renderRejected(s, body);
  }

  // Rows the dashboard refused (forged or broken alerts, attack events, dead letters): how many,
  // why, and the latest, as one row of the feeds table.
  function renderRejected(s, body) {
    const parts = [['alerts', s.alerts], ['attack events', s.attacks], ['dead letters', s.dead_letters]];
    let total = 0;
    const reasons = [];
    let latest = null;
    for (const [label, section] of parts) {
      const rej = section && section.rejected;
      if (!rej || !rej.total) continue;
      total += rej.total;
      for (const [reason, n] of rej.by_reason || []) reasons.push(label + ': ' + reason + ' × ' + fmtInt(n));
      for (const r of rej.recent || []) if (!latest || r.at > latest.at) latest = Object.assign({ label }, r);
    }
    const tr = el('tr', { attrs: { id: 'rejected-row' } });
    cell(tr, 'Rejected rows');
    const st = el('td'); st.append(badge(total ? fmtInt(total) : 'none', total ? 'state-warn' : 'state-ok')); tr.append(st);
    cell(tr, latest ? ago(latest.at, s.now) : '–');
    const summary = reasons.slice(0, 3).join(' · ') || 'not aggregated: out-of-window times, wrong types, oversized';
    cell(tr, summary, 'wrap', reasons.join('\n') + (latest && latest.preview ? '\nlatest (' + latest.source + '): ' + latest.preview : ''));
    body.append(tr);
  }

  function render(s) {
    state.data = s;
    setText('clock', hhmmss(s.now));
    const info = s.info || {};
    setText('source-info', info.bootstrap_servers ? 'Kafka ' + info.bootstrap_servers + ' · topic ' + info.alerts_topic
      : 'Parquet ' + (info.output || ''));
    const steps = [renderKpis, renderCharts, renderTops, (x) => renderAlerts(x.alerts.recent, false),
                   renderAttacks, renderIncidents, renderHealth, renderModels, renderFeeds];
    for (const step of steps) {
      try { step(s); } catch (e) { console.error('render', step.name, e); }
    }
    state.lastRecent = s.alerts.recent;
  }

  function setConnection(kind, text) {
    $('conn').className = 'conn ' + kind;
    setText('conn-text', text);
  }

  async function poll() {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), 5000);
    try {
      const response = await fetch('/api/state', { cache: 'no-store', signal: ctrl.signal });
      if (response.status === 401) { window.location.assign('/login'); return; }
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const s = await response.json();
      state.failures = 0;
      render(s);
      setConnection('live', 'live');
    } catch (e) {
      state.failures += 1;
      setConnection(state.failures >= 3 ? 'offline' : 'stale',
                    state.failures >= 3 ? 'server unreachable' : 'retrying…');
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  }

  // ---------- interactions ----------
  async function showDetail(id, key) {
    state.selected = key != null ? key : id;
    for (const tr of $('alerts-table').tBodies[0].rows) {
      tr.classList.toggle('selected', key != null ? tr.dataset.key === key : tr.dataset.id === id);
    }
    const panel = $('alert-detail');
    panel.hidden = false;
    setText('detail-id', id);
    const fields = $('detail-fields');
    fields.replaceChildren();
    setText('detail-body', 'loading…');
    try {
      const query = key != null ? 'key=' + encodeURIComponent(key) : 'id=' + encodeURIComponent(id);
      const response = await fetch('/api/alert?' + query, { cache: 'no-store' });
      if (!response.ok) throw new Error(response.status === 404 ? 'no longer in the buffer' : 'HTTP ' + response.status);
      const a = await response.json();
      const pairs = [['kind', kindLabel(a.kind)], ['severity', a.severity], ['score', fmtNum(a.score, 4)],
                     ['model', a.model_version], ['machine', a.machine], ['program', a.program],
                     ['service', a.service], ['protocol', a.protocol_type], ['flag', a.flag],
                     ['site', a.site],
                     ['source', a.source], ['event time', isoUtc(a.event_time)],
                     ['processed', isoUtc(a.processing_time)]];
      for (const [k, v] of pairs) fields.append(el('dt', null, k), el('dd', null, v == null ? '–' : v));
      const why = $('detail-reasons');
      why.replaceChildren();
      if (a.reasons && a.reasons.length) {
        why.append(el('h4', null, 'Why: unlike normal traffic'), reasonList(a.reasons));
      } else {
        why.append(el('p', { cls: 'hint' }, 'No reasons given (a model published without a normal profile).'));
      }
      let pretty = a.details == null ? '(no details)' : a.details;
      try { pretty = JSON.stringify(JSON.parse(a.details), null, 2); } catch (e) { /* shown as is */ }
      setText('detail-body', pretty);
    } catch (e) {
      setText('detail-body', 'Cannot load this alert: ' + e.message);
    }
  }

  function init() {
    $('alerts-table').tBodies[0].addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr');
      if (tr && tr.dataset.id) showDetail(tr.dataset.id, tr.dataset.key);
    });
    $('detail-close').addEventListener('click', () => {
      $('alert-detail').hidden = true;
      state.selected = null;
      for (const tr of $('alerts-table').tBodies[0].rows) tr.classList.remove('selected');
    });
    $('pause').addEventListener('click', () => {
      state.paused = !state.paused;
      const b = $('pause');
      b.setAttribute('aria-pressed', String(state.paused));
      b.textContent = state.paused ? 'Resume' : 'Pause';
      if (!state.paused && state.data) renderAlerts(state.data.alerts.recent, true);
    });
    for (const id of ['filter', 'filter-kind', 'filter-sev']) {
      $(id).addEventListener('input', () => { if (state.data) renderAlerts(state.data.alerts.recent, true); });
    }
    window.addEventListener('resize', () => { if (state.data) renderCharts(state.data); });
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
