// The dashboard's script: polls /api/pair on the node that served the page and draws it.
const tokenBox = document.getElementById('token');
// A token in the URL fragment (#token=...) is taken once and kept for this tab's session only
// (sessionStorage: gone when the tab closes, never shared with other tabs). A token an older
// version left in localStorage, kept for ever, is removed.
localStorage.removeItem('mailpair-token');
const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
if (fromHash) { sessionStorage.setItem('mailpair-token', fromHash); history.replaceState(null, '', location.pathname); }
tokenBox.value = sessionStorage.getItem('mailpair-token') || '';
document.getElementById('save').onclick = () => { sessionStorage.setItem('mailpair-token', tokenBox.value); refresh(); };
const samples = [];  // [time, {node/db: copy_queue}]
function hdr() { return {'Authorization': 'Bearer ' + tokenBox.value}; }
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = (text === null || text === undefined) ? '' : text; if (cls) td.className = cls; return td; }
function clear(t) { while (t.rows.length > 1) t.deleteRow(1); }
function say(text) { document.getElementById('msg').textContent = text; }
// Every call goes to the node that served this page (the Content-Security-Policy allows no
// other); it acts on its peer's copy for us, so the browser never calls the peer's origin.
async function act(node, db, action) {
  const path = `/api/nodes/${encodeURIComponent(node)}/databases/${encodeURIComponent(db)}/copy/${action}`;
  const r = await fetch(path, {method: 'POST', headers: hdr()});
  const body = await r.json();
  say(r.ok ? '' : action + ': ' + body.error);
  refresh();
}
function drawLag() {
  const c = document.getElementById('lag'), g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const now = Date.now() / 1000, keys = new Set();
  samples.forEach(s => Object.keys(s[1]).forEach(k => keys.add(k)));
  let max = 1; samples.forEach(s => Object.values(s[1]).forEach(v => { if (v > max) max = v; }));
  g.fillStyle = '#777'; g.font = '11px sans-serif'; g.fillText(max + ' records', 4, 12); g.fillText('0', 4, c.height - 4);
  const colors = ['#1060c0', '#c06010', '#10a040', '#a01080'];
  [...keys].forEach((k, i) => {
    g.strokeStyle = colors[i % colors.length]; g.beginPath();
    samples.forEach((s, j) => {
      const x = c.width - (now - s[0]) * c.width / 300, y = c.height - 4 - (s[1][k] || 0) * (c.height - 20) / max;
      if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke(); g.fillStyle = colors[i % colors.length]; g.fillText(k, 80 + i * 160, 12);
  });
}
async function refresh() {
  const r = await fetch('/api/pair', {headers: hdr()});
  if (!r.ok) { say('status: HTTP ' + r.status + (r.status === 401 ? ' (enter the admin token)' : '')); return; }
  say('');
  const p = await r.json();
  const w = p.witness || {};
  document.getElementById('summary').textContent =
    `epoch ${p.epoch} · witness ${w.path || 'none'}${w.active ? ' (active per witness: ' + w.active + ')' : ''}`;
  const nt = document.getElementById('nodes'); clear(nt);
  for (const n of p.nodes) {
    const row = nt.insertRow(); cell(row, n.name); cell(row, n.role, n.role); cell(row, n.reachable ? 'yes' : 'no', n.reachable ? 'yes' : 'no'); cell(row, n.url);
  }
  const ct = document.getElementById('copies'); clear(ct);
  const point = {};
  for (const db of p.databases) for (const c of db.copies) {
    const row = ct.insertRow();
    cell(row, db.name); cell(row, c.node); cell(row, c.status, c.status); cell(row, c.copy_queue);
    cell(row, c.replay_queue); cell(row, c.stored_lsn); cell(row, c.replayed_lsn);
    // replication over TLS, or plain (not encrypted) because the operator asked for it
    cell(row, c.transport, c.transport === 'plain' ? 'no' : ''); cell(row, c.reason);
    const td = row.insertCell();
    const passive = p.nodes.find(n => n.name === c.node && n.role === 'passive');
    if (passive) {
      point[c.node + '/' + db.name] = c.copy_queue || 0;
      for (const a of ['suspend', 'resume', 'reseed']) {
        const b = document.createElement('button'); b.textContent = a; b.onclick = () => act(c.node, db.name, a); td.appendChild(b);
      }
    }
  }
  samples.push([Date.now() / 1000, point]);
  while (samples.length && samples[0][0] < Date.now() / 1000 - 300) samples.shift();
  drawLag();
  const e = await fetch('/api/events', {headers: hdr()});
  if (e.ok) {
    const ul = document.getElementById('events'); ul.innerHTML = '';
    for (const ev of (await e.json()).events.slice(-20).reverse()) {
      const li = document.createElement('li');
      li.textContent = new Date(ev.time * 1000).toISOString() + ' ' + ev.kind + ': ' + ev.message;
      ul.appendChild(li);
    }
  }
}
refresh(); setInterval(refresh, 2000);
