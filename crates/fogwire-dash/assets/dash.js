// fogwire's dashboard: one server-sent-events stream; the first event is
// the whole view, each later one carries only what changed, and only the
// cells of what changed are written (nothing is re-rendered whole).
'use strict';
(function () {
  const view = document.body.dataset.view;
  const COIN = 1e6;
  const HISTORY_MAX = 3600;

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + units[i];
  }
  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + (s % 60) + 's';
    return s + 's';
  }
  const missing = '–';
  const formats = {
    plain: v => v == null ? missing : String(v),
    bytes: n => n == null ? missing : bytes(n),
    rate: n => n == null ? missing : bytes(n) + '/s',
    percent: x => x == null ? missing : x.toFixed(1) + ' %',
    coins: n => n == null ? missing : (n / COIN).toLocaleString(undefined, { maximumFractionDigits: 6 }),
    duration: s => s == null ? missing : duration(s),
    list: l => l && l.length ? l.join(', ') : 'none',
  };
  function show(element, value) {
    const text = (formats[element.dataset.format || 'plain'] || formats.plain)(value);
    if (element.textContent !== text) element.textContent = text;
  }

  const connection = document.getElementById('connection');
  function connectionSays(text, state) {
    connection.textContent = text;
    connection.className = 'connection ' + state;
  }

  // ---- this board --------------------------------------------------------
  const fieldElements = new Map();
  for (const element of document.querySelectorAll('[data-field]')) {
    const name = element.dataset.field;
    if (!fieldElements.has(name)) fieldElements.set(name, []);
    fieldElements.get(name).push(element);
  }
  let series = null;

  function showFields(changed) {
    for (const [name, value] of Object.entries(changed)) {
      for (const element of fieldElements.get(name) || []) show(element, value);
    }
  }

  function addPoint(sample) {
    if (!series) return;
    const last = series.unix_ms[series.unix_ms.length - 1];
    if (sample.unix_ms === undefined || sample.unix_ms === last) return;
    for (const name of ['unix_ms', 'cpu_percent', 'memory_used_bytes', 'rx_bytes_per_sec', 'tx_bytes_per_sec']) {
      series[name].push(sample[name]);
      if (series[name].length > HISTORY_MAX) series[name].shift();
    }
  }

  function draw(canvas, lines, maxFloor, label) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== width * ratio) { canvas.width = width * ratio; canvas.height = height * ratio; }
    const context = canvas.getContext('2d');
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    let max = maxFloor;
    for (const line of lines) for (const v of line.values) if (v > max) max = v;
    context.strokeStyle = '#2a333d';
    context.fillStyle = '#8b96a1';
    context.font = '11px system-ui, sans-serif';
    for (const fraction of [0.5, 1]) {
      const y = height - 14 - (height - 24) * fraction;
      context.beginPath(); context.moveTo(0, y); context.lineTo(width, y); context.stroke();
      context.fillText(label(max * fraction), 4, y - 2);
    }
    // The span drawn: the last hour once there is an hour; until then
    // at least five minutes, so a new board's first seconds are legible.
    let span = 300;
    for (const line of lines) span = Math.max(span, line.values.length);
    span = Math.min(span, HISTORY_MAX);
    for (const line of lines) {
      const values = line.values, n = values.length;
      if (n < 2) continue;
      context.strokeStyle = line.color;
      context.lineWidth = 1.5;
      context.beginPath();
      for (let i = 0; i < n; i++) {
        const x = width * (span - n + i) / (span - 1);
        const y = height - 14 - (height - 24) * (values[i] / max);
        if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
      }
      context.stroke();
    }
    context.fillStyle = '#8b96a1';
    context.fillText(span >= HISTORY_MAX ? '1 hour ago' : Math.round(span / 60) + ' min ago', 4, height - 2);
    context.fillText('now', width - 24, height - 2);
  }

  let drawPending = false;
  function drawCharts() {
    if (!series || drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      const cpu = document.getElementById('chart-cpu');
      const net = document.getElementById('chart-net');
      if (cpu) draw(cpu, [{ values: series.cpu_percent, color: '#4fb3ff' }], 100, v => v.toFixed(0) + ' %');
      if (net) draw(net, [
        { values: series.rx_bytes_per_sec, color: '#5fd38d' },
        { values: series.tx_bytes_per_sec, color: '#f0a04b' },
      ], 1024, v => bytes(Math.round(v)) + '/s');
    });
  }

  // ---- the box -------------------------------------------------------------
  const columns = [
    ['cpu_percent', 'percent'], ['memory_used_bytes', 'bytes'], ['disk_used_bytes', 'bytes'],
    ['rx_bytes_per_sec', 'rate'], ['tx_bytes_per_sec', 'rate'], ['links', 'plain'],
    ['relayed_bytes', 'bytes'], ['store_bytes', 'bytes'], ['tasks_run', 'plain'],
    ['balance', 'coins'], ['earned_per_hour', 'coins'], ['services', 'list'],
  ];
  const rows = new Map();
  let thisBoard = null;


  function row(id) {
    let entry = rows.get(id);
    if (entry) return entry;
    const tr = document.createElement('tr');
    tr.dataset.board = id;
    if (id === thisBoard) tr.classList.add('this-board');
    const cells = {};
    const name = document.createElement('td');
    name.textContent = id.slice(0, 12);
    name.title = id;
    cells.name = name;
    tr.appendChild(name);
    cells.state = document.createElement('td');
    tr.appendChild(cells.state);
    for (const [field, format] of columns) {
      const td = document.createElement('td');
      td.dataset.format = format;
      td.dataset.field = field;
      cells[field] = td;
      tr.appendChild(td);
    }
    const body = document.querySelector('#boards tbody');
    // This board first, the rest in the order of their ids.
    let before = null;
    for (const other of body.children) {
      if (id !== thisBoard && other.dataset.board !== thisBoard && other.dataset.board > id) { before = other; break; }
    }
    if (id === thisBoard) before = body.firstChild;
    body.insertBefore(tr, before);
    entry = { tr, cells, state: null, error: null, age_secs: 0 };
    rows.set(id, entry);
    return entry;
  }

  function showBoard(id, change) {
    const entry = row(id);
    // The operator's name for it (fogwire name), else its id's start.
    if ('name' in change) entry.cells.name.textContent = change.name || id.slice(0, 12);
    if ('state' in change) entry.state = change.state;
    if ('error' in change) entry.error = change.error;
    if ('age_secs' in change) entry.age_secs = change.age_secs;
    const stale = entry.error != null || entry.age_secs > 0;
    entry.tr.classList.toggle('stale', stale);
    let state = entry.state || 'unknown';
    if (entry.error) state += ' · ' + entry.error;
    else if (entry.age_secs > 0) state += ' · figures ' + entry.age_secs + ' s old';
    if (entry.cells.state.textContent !== state) entry.cells.state.textContent = state;
    entry.cells.state.className = 'state-' + (entry.state || 'unknown');
    for (const [field, value] of Object.entries(change.sample || {})) {
      if (entry.cells[field]) show(entry.cells[field], value);
    }
  }

  function noteBoxSize() {
    const note = document.getElementById('box-note');
    if (note) note.textContent = rows.size + (rows.size === 1 ? ' board' : ' boards') +
      (rows.size === 1 ? ' (this board is in no cluster, or has heard of no other board yet)' : '');
  }

  // ---- the stream ------------------------------------------------------------
  const source = new EventSource('/dash/events?view=' + view);
  source.addEventListener('snapshot', event => {
    const snapshot = JSON.parse(event.data);
    thisBoard = snapshot.this;
    connectionSays('live', 'live');
    if (view === 'board') {
      series = snapshot.history;
      const own = snapshot.boards.find(board => board.node_id === thisBoard);
      if (own && own.sample) showFields(own.sample);
      const name = document.getElementById('name');
      if (name && own && own.name) name.textContent = own.name + ' · ';
      drawCharts();
    } else {
      for (const entry of rows.values()) entry.tr.remove();
      rows.clear();
      for (const board of snapshot.boards) showBoard(board.node_id, board);
      noteBoxSize();
    }
    document.body.dataset.updates = '0';
  });
  source.addEventListener('update', event => {
    const update = JSON.parse(event.data);
    if (view === 'board') {
      const own = update.boards[thisBoard];
      if (own && own.sample) {
        showFields(own.sample);
        addPoint(own.sample);
        drawCharts();
      }
    } else {
      for (const [id, change] of Object.entries(update.boards)) showBoard(id, change);
      for (const id of update.gone || []) {
        const entry = rows.get(id);
        if (entry) { entry.tr.remove(); rows.delete(id); }
      }
      noteBoxSize();
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  });
  source.onerror = () => connectionSays('connection lost: retrying', 'lost');
})();
