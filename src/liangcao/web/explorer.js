// liangcao explorer: a static page over the node's API (no CDN, no framework), routed by the URL fragment.
// Every number shown is read from the API with the viewer's bearer token; the chain view follows
// /v1/events (server-sent events) and redraws its chart as blocks are committed.
"use strict";

const TEXT = {
  en: {
    chain: "Chain", consortium: "Consortium", maturities: "Maturities", height: "Height", txs: "Transactions",
    tps: "tx/s (recent)", interval: "block interval ms", orgs: "Organisations", blocks: "Latest blocks",
    latest: "Latest transactions", time: "Time", hash: "Hash", root: "Root", code: "Code", signers: "Signers",
    args: "Arguments", events: "Events", proof: "Proof", finality: "Finality", final: "final", pending: "not final yet",
    attestations: "Attestations", org: "Organisation", role: "Role", type: "Type", status: "Status",
    holder: "Holder", face: "Face", financed: "Financed by", maturity: "Maturity", tree: "Split tree",
    portfolio: "Portfolio", book: "Financed book", total: "Total", outstanding: "Outstanding", history: "History",
    places: "Places (schematic)", graph: "Packing and making", verify: "Open the consumer verify page",
    notFound: "Nothing found for", throughput: "Throughput (tx per block) and block interval", live: "live",
    active: "active", attestedHead: "attested the head", forks: "Fork alarms", none: "none", state: "State",
    needToken: "This explorer reads the node's API with your bearer token (liangcao token create).", open: "Open",
    due: "Due", issuer: "Issuer", value: "Value", member: "Member", recordedBy: "Recorded by", block: "Block",
    more: "Next page", terms: "Financing terms",
  },
  zh: {
    chain: "链", consortium: "联盟", maturities: "到期", height: "高度", txs: "交易", tps: "每秒交易(近期)",
    interval: "出块间隔 毫秒", orgs: "机构", blocks: "最新区块", latest: "最新交易", time: "时间", hash: "哈希",
    root: "根", code: "结果码", signers: "签名方", args: "参数", events: "事件", proof: "证明", finality: "最终性",
    final: "已最终确认", pending: "尚未最终确认", attestations: "背书", org: "机构", role: "角色", type: "类型",
    status: "状态", holder: "持有人", face: "面额", financed: "融资银行", maturity: "到期日", tree: "拆分树",
    portfolio: "持仓", book: "融资账簿", total: "合计", outstanding: "未结清", history: "溯源历史",
    places: "地点(示意图)", graph: "包装与加工", verify: "打开消费者验证页", notFound: "未找到", live: "实时",
    throughput: "吞吐量(每块交易数)与出块间隔", active: "有效", attestedHead: "已背书最新区块", forks: "分叉告警",
    none: "无", state: "状态数据", needToken: "浏览器需要您的访问令牌(liangcao token create)。", open: "打开",
    due: "应付", issuer: "出票方", value: "值", member: "成员", recordedBy: "记录机构", block: "区块",
    more: "下一页", terms: "融资条款",
  },
};
let lang = localStorage.getItem("liangcao.lang") || (navigator.language.startsWith("zh") ? "zh" : "en");
const t = (k) => TEXT[lang][k] || k;

// ---- the token: from ?token= once (then kept for this tab only and removed from the address) -------------
const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("liangcao.token", params.get("token"));
  history.replaceState(null, "", location.pathname + location.hash);
}
const token = () => sessionStorage.getItem("liangcao.token") || "";

async function api(path, body) {
  const init = { headers: { Authorization: "Bearer " + token() } };
  if (body !== undefined) Object.assign(init, { method: "POST", body: JSON.stringify(body) });
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(data.message || r.statusText), { status: r.status });
  return data;
}
const query = async (contract, method, args) => (await api(`/v1/query/${contract}/${method}`, args || {})).result;

// ---- DOM helpers: text always goes in as text, never as HTML ---------------------------------------------
function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v; else if (k.startsWith("data-")) n.setAttribute(k, v); else n[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) n.append(c instanceof Node ? c : String(c));
  return n;
}
const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}
const link = (href, text) => el("a", { href }, text);
const short = (h) => (h && h.length > 18 ? h.slice(0, 10) + "…" + h.slice(-6) : h);
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
const yuan = (fen) => "¥" + (fen / 100).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
function table(heads, rows, attrs) {
  return el("div", { class: "scroll" }, el("table", attrs || {},
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, t(h))))),
    el("tbody", {}, rows)));
}
const view = document.getElementById("view");
function show(...nodes) { view.replaceChildren(...nodes); }
function fail(e) { show(el("h1", { class: "bad" }, e.status === 404 ? `${t("notFound")}` : String(e.message || e))); }

// ---- chain: stats, chart, latest blocks and transactions, live --------------------------------------------
let stream = null;
function chart(blocks) {
  const w = 640, h = 160, pad = 24, list = blocks.slice().reverse();
  const g = svg("svg", { viewBox: `0 0 ${w} ${h}`, id: "chart", role: "img", "aria-label": t("throughput") });
  const maxTx = Math.max(1, ...list.map((b) => b.header.tx_count));
  const gaps = list.map((b, i) => (i ? Math.max(0, b.header.time_ms - list[i - 1].header.time_ms) : 0));
  const maxGap = Math.max(1, ...gaps);
  const bw = (w - 2 * pad) / Math.max(1, list.length);
  list.forEach((b, i) => {
    const bh = ((h - 2 * pad) * b.header.tx_count) / maxTx;
    g.append(svg("rect", { x: pad + i * bw + 1, y: h - pad - bh, width: Math.max(1, bw - 2), height: bh, fill: "#c2410c" },
      undefined));
  });
  const pts = gaps.map((v, i) => `${pad + i * bw + bw / 2},${h - pad - ((h - 2 * pad) * v) / maxGap}`).join(" ");
  g.append(svg("polyline", { points: pts, fill: "none", stroke: "#1d4ed8", "stroke-width": 1.5 }));
  g.append(svg("text", { x: pad, y: 14 }, `${t("txs")} ≤ ${maxTx} · ${t("interval")} ≤ ${maxGap}`));
  return g;
}
function blockRow(b) {
  const hd = b.header;
  return el("tr", { "data-height": hd.height }, el("td", {}, link(`#/block/${hd.height}`, hd.height)),
    el("td", {}, hd.tx_count), el("td", {}, when(hd.time_ms)), el("td", { class: "mono" }, short(b.block_hash)));
}
async function chainView() {
  const [{ blocks }, cfg] = await Promise.all([api("/v1/blocks?limit=40"), query("consortium", "config")]);
  const head = blocks[0].header;
  const recentTx = blocks.reduce((s, b) => s + b.header.tx_count, 0);
  const span = Math.max(1, head.time_ms - blocks[blocks.length - 1].header.time_ms);
  const stat = (id, v, k) => el("div", { class: "stat" }, el("b", { id }, v), el("span", {}, t(k)));
  const txRows = el("tbody", { id: "txs" });
  const blockBody = el("tbody", { id: "blocks" }, blocks.slice(0, 15).map(blockRow));
  const chartBox = el("div", { id: "chartBox" }, chart(blocks));
  show(
    el("h1", {}, t("chain"), " ", el("span", { class: "pill ok", id: "live" }, t("live"))),
    el("div", { class: "stats" }, stat("stat-height", head.height, "height"), stat("stat-txs", recentTx, "txs"),
      stat("stat-tps", ((recentTx * 1000) / span).toFixed(1), "tps"), stat("stat-orgs", cfg.orgs.length, "orgs")),
    el("h2", {}, t("throughput")), chartBox,
    el("h2", {}, t("blocks")),
    el("div", { class: "scroll" }, el("table", { class: "keep" }, el("thead", {}, el("tr", {},
      ["height", "txs", "time", "hash"].map((h) => el("th", {}, t(h))))), blockBody)),
    el("h2", {}, t("latest")),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {},
      ["hash", "type", "block"].map((h) => el("th", {}, t(h))))), txRows)),
  );
  for (const b of blocks.slice(0, 3)) {
    const full = await api(`/v1/blocks/${b.header.height}`);
    full.txs.forEach((tx, i) => txRows.append(txRow(full.tx_ids[i], tx, b.header.height)));
  }
  if (stream) stream.close();
  stream = new EventSource(`/v1/events?from_height=${head.height + 1}&access_token=${encodeURIComponent(token())}`);
  stream.addEventListener("block", async (m) => {
    const b = JSON.parse(m.data);
    const full = b.tx_ids.length ? await api(`/v1/blocks/${b.header.height}`) : { txs: [] };
    blocks.unshift(b); blocks.length = Math.min(blocks.length, 40);
    document.getElementById("stat-height").textContent = b.header.height;
    blockBody.prepend(blockRow(b));
    while (blockBody.children.length > 15) blockBody.lastChild.remove();
    b.tx_ids.map((id, i) => txRow(id, full.txs[i], b.header.height)).reverse().forEach((row) => txRows.prepend(row));
    while (txRows.children.length > 30) txRows.lastChild.remove();
    chartBox.replaceChildren(chart(blocks));
    view.dataset.liveHeight = b.header.height;
  });
}
function txRow(id, tx, height) {
  return el("tr", { class: "tx" }, el("td", { class: "mono" }, link(`#/tx/${id}`, short(id))),
    el("td", {}, tx ? `${tx.body.contract}.${tx.body.method}` : ""), el("td", {}, link(`#/block/${height}`, height)));
}

// ---- a block ------------------------------------------------------------------------------------------
async function blockView(height) {
  const b = await api(`/v1/blocks/${height}`);
  const hd = b.header;
  const fields = ["height", "chain_id", "prev_hash", "time_ms", "tx_root", "receipt_root", "state_hash", "tx_count"];
  const ids = b.tx_ids;
  show(
    el("h1", {}, `${t("block")} ${hd.height}`),
    table(["hash", "value"], [el("tr", {}, el("td", {}, "block_hash"), el("td", { class: "mono" }, b.block_hash)),
      ...fields.map((f) => el("tr", {}, el("td", {}, f), el("td", { class: "mono" }, f === "time_ms" ? `${hd[f]} (${when(hd[f])})` : hd[f])))]),
    el("h2", {}, `${t("txs")} (${b.txs.length})`),
    table(["hash", "type", "code"], b.txs.map((tx, i) => el("tr", { class: "tx" },
      el("td", { class: "mono" }, link(`#/tx/${ids[i]}`, short(ids[i]))), el("td", {}, `${tx.body.contract}.${tx.body.method}`),
      el("td", { class: b.receipts[i].code ? "bad" : "ok" }, `${b.receipts[i].code} ${b.receipts[i].message || ""}`)))),
    el("h2", {}, t("attestations")),
    table(["member", "hash"], b.attestations.map((a) => el("tr", { class: "attestation" },
      el("td", {}, a.member || "peer"), el("td", { class: "mono" }, short(a.state_hash))))),
  );
}
// ---- a transaction -------------------------------------------------------------------------------------
async function txView(id) {
  const x = await api(`/v1/txs/${id}`);
  const fin = x.finality;
  show(
    el("h1", { class: "mono" }, id),
    el("p", {}, `${x.tx.body.contract}.${x.tx.body.method} · `, link(`#/block/${x.height}`, `${t("block")} ${x.height}`),
      ` #${x.index} · `, el("span", { class: x.receipt.code ? "bad" : "ok", id: "code" }, `${t("code")} ${x.receipt.code} ${x.receipt.message || ""}`)),
    el("h2", {}, t("signers")),
    table(["member", "org", "role", "type"], x.signers.map((s) => el("tr", { class: "signer" },
      el("td", {}, s.member), el("td", {}, s.org), el("td", {}, s.role), el("td", {}, s.org_type)))),
    el("h2", {}, t("finality")),
    el("p", { id: "finality", class: fin.final ? "ok" : "bad" },
      `${fin.final ? t("final") : t("pending")}: ${fin.attested_by.join(", ")} (${fin.attested_by.length}/${fin.quorum})`),
    el("h2", {}, t("args")), el("pre", {}, JSON.stringify(x.tx.body.args, null, 1)),
    el("h2", {}, t("events")), el("pre", {}, JSON.stringify(x.receipt.events || [], null, 1)),
    el("h2", {}, t("proof")),
    el("p", { class: "mono" }, `tx_root ${x.header.tx_root} · path ${x.tx_proof.path.length} · liangcao verify-proof`),
  );
}

// ---- supply-chain finance -------------------------------------------------------------------------------
async function voucherView(id) {
  const tree = await query("scf.vouchers", "tree", { voucher: id });
  const leaves = [];
  const depthOf = (n, d) => { n.depth = d; if (!n.children.length) leaves.push(n); n.children.forEach((c) => depthOf(c, d + 1)); };
  depthOf(tree, 0);
  const bw = 170, bh = 62, gx = 14, gy = 40;
  let maxDepth = 0;
  const place = (n) => {
    maxDepth = Math.max(maxDepth, n.depth);
    if (!n.children.length) { n.x = leaves.indexOf(n) * (bw + gx); } else { n.children.forEach(place); n.x = (n.children[0].x + n.children[n.children.length - 1].x) / 2; }
    n.y = n.depth * (bh + gy);
  };
  place(tree);
  const width = leaves.length * (bw + gx) + gx, height = (maxDepth + 1) * (bh + gy);
  const g = svg("svg", { viewBox: `-${gx} -10 ${width + gx} ${height}`, id: "tree", role: "img", "aria-label": t("tree") });
  const draw = (n) => {
    n.children.forEach((c) => {
      g.append(svg("line", { x1: n.x + bw / 2, y1: n.y + bh, x2: c.x + bw / 2, y2: c.y, stroke: "#94a3b8" }));
      draw(c);
    });
    const financed = !!n.financed_by;
    const box = svg("g", { class: "node", "data-id": n.id, "data-face": n.face });
    box.append(svg("rect", { x: n.x, y: n.y, width: bw, height: bh, rx: 6, fill: financed ? "#fef3c7" : "#ecfdf5", stroke: financed ? "#b45309" : "#15803d" }));
    box.append(svg("text", { x: n.x + 6, y: n.y + 15 }, `${n.holder}`));
    box.append(svg("text", { x: n.x + 6, y: n.y + 31 }, `${yuan(n.face)} · ${n.status}`));
    box.append(svg("text", { x: n.x + 6, y: n.y + 47 }, financed ? `${t("financed")} ${n.financed_by}` : `${t("maturity")} ${n.maturity}`));
    g.append(box);
  };
  draw(tree);
  const rows = [];
  // Private financing terms (docs/privacy.md): a member of the collection reads them, anyone else the commitment.
  const terms = {};
  const financedIds = [];
  const collect = (n) => { if (n.financed_by) financedIds.push(n.id); n.children.forEach(collect); };
  collect(tree);
  await Promise.all(financedIds.map(async (v) => {
    // Only a voucher financed privately has a commitment: look first (a listing answers 200 either way), so a
    // publicly financed one costs no failed request.
    const key = `scf.private/~pvt/financing/${v}`;
    try {
      const found = (await api(`/v1/state?prefix=${encodeURIComponent(key)}&limit=1`)).entries.some((e) => e.key === key);
      terms[v] = found ? await api(`/v1/private?contract=scf.private&collection=financing&key=${encodeURIComponent(v)}`) : null;
    } catch (e) { terms[v] = null; }
  }));
  const termsCell = (n) => {
    const p = terms[n.id];
    if (!p) return n.financed_by ? "public" : "-";
    if (p.value) return `${p.value.rate_bps} bps · ${p.value.days} d · ${yuan(p.value.payout)}`;
    return el("span", { class: "mono", title: p.members.join(", ") }, `private ${p.hash.slice(0, 12)}…`);
  };
  const walk = (n) => { rows.push(el("tr", {}, el("td", { class: "mono" }, n.id), el("td", {}, link(`#/portfolio/${n.holder}`, n.holder)),
    el("td", {}, yuan(n.face)), el("td", {}, n.status), el("td", {}, n.financed_by ? link(`#/book/${n.financed_by}`, n.financed_by) : "-"),
    el("td", {}, termsCell(n)))); n.children.forEach(walk); };
  walk(tree);
  show(el("h1", {}, `${t("tree")} ${id}`), g, table(["hash", "holder", "face", "status", "financed", "terms"], rows));
}
// SCF lists come a page at a time (no holder can make one fail for everyone): "next" links to the page after.
const nextPage = (base, next) => (next ? el("p", {}, link(`${base}/${encodeURIComponent(next)}`, t("more"))) : "");
async function portfolioView(org, after) {
  const p = await query("scf.vouchers", "portfolio", { org, after: decodeURIComponent(after || "") });
  show(el("h1", {}, `${t("portfolio")} ${org}`), el("p", { id: "total" }, `${t("total")} ${yuan(p.total)}`),
    table(["hash", "face", "status", "maturity"], p.vouchers.map((v) => el("tr", {}, el("td", { class: "mono" }, link(`#/voucher/${v.id}`, v.id)),
      el("td", {}, yuan(v.face)), el("td", {}, v.status), el("td", {}, v.maturity)))), nextPage(`#/portfolio/${org}`, p.next));
}
async function bookView(org, after) {
  const b = await query("scf.vouchers", "financed_book", { org, after: decodeURIComponent(after || "") });
  show(el("h1", {}, `${t("book")} ${org}`),
    el("p", { id: "total" }, `${t("total")} ${yuan(b.total)} · ${t("outstanding")} ${yuan(b.outstanding)}`),
    table(["hash", "holder", "face", "status"], b.vouchers.map((v) => el("tr", {}, el("td", { class: "mono" }, link(`#/voucher/${v.id}`, v.id)),
      el("td", {}, v.holder), el("td", {}, yuan(v.face)), el("td", {}, v.status)))), nextPage(`#/book/${org}`, b.next));
}
async function maturitiesView(after) {
  const until = new Date(Date.now() + 365 * 86400000).toISOString().slice(0, 10);
  const m = await query("scf.vouchers", "maturities", { until, after: decodeURIComponent(after || "") });
  show(el("h1", {}, `${t("maturities")} ≤ ${until}`),
    table(["root", "maturity", "issuer", "outstanding"], m.roots.map((r) => el("tr", {}, el("td", { class: "mono" }, link(`#/voucher/${r.id}`, r.id)),
      el("td", {}, r.maturity), el("td", {}, r.issuer || ""), el("td", {}, yuan(r.outstanding))))), nextPage("#/maturities", m.next));
}

// ---- traceability ---------------------------------------------------------------------------------------
async function itemView(id) {
  const h = await api(`/v1/trace/provenance?id=${encodeURIComponent(id)}`);
  const places = [];
  for (const e of h.events) {
    const p = (e.event.bizLocation && e.event.bizLocation.id) || (e.event.readPoint && e.event.readPoint.id) || e.org;
    if (places[places.length - 1] !== p) places.push(p);
  }
  const map = svg("svg", { viewBox: `0 0 ${Math.max(1, places.length) * 160} 70`, id: "map", role: "img", "aria-label": t("places") });
  places.forEach((p, i) => {
    if (i) map.append(svg("line", { x1: i * 160 - 110, y1: 30, x2: i * 160 + 20, y2: 30, stroke: "#9a3412", "stroke-width": 2 }));
    map.append(svg("circle", { cx: i * 160 + 30, cy: 30, r: 10, fill: "#fed7aa", stroke: "#9a3412" }));
    map.append(svg("text", { x: i * 160 + 5, y: 58 }, short(p.replace("https://id.gs1.org/", ""))));
  });
  const ids = [...new Set(h.edges.flatMap((e) => [e.from, e.to]))];
  const graph = svg("svg", { viewBox: `0 0 560 ${Math.max(1, ids.length) * 40 + 10}`, id: "graph", role: "img", "aria-label": t("graph") });
  ids.forEach((n, i) => graph.append(svg("text", { x: 10, y: 25 + i * 40, "data-node": n }, short(n))));
  h.edges.forEach((e) => {
    const a = ids.indexOf(e.from), b = ids.indexOf(e.to);
    graph.append(svg("path", { d: `M200 ${20 + a * 40} C320 ${20 + a * 40} 320 ${20 + b * 40} 440 ${20 + b * 40}`, fill: "none", stroke: e.kind === "made_from" ? "#1d4ed8" : "#15803d" }));
    graph.append(svg("text", { x: 445, y: 24 + b * 40 }, e.kind));
  });
  show(
    el("h1", {}, `${t("history")} ${id}`),
    el("p", {}, link(`/verify/link?id=${encodeURIComponent(id)}`, t("verify"))),
    el("ol", { class: "timeline", id: "timeline" }, h.events.map((e) => el("li", { class: "event" },
      el("time", {}, e.event.eventTime), " ", el("b", {}, e.event.bizStep || e.type), " · ", `${t("recordedBy")} ${e.org}`, " · ",
      link(`#/tx/${e.tx}`, `${t("block")} ${e.height}`)))),
    el("h2", {}, t("places")), map,
    el("h2", {}, t("graph")), graph,
  );
}

// ---- consortium ------------------------------------------------------------------------------------------
async function consortiumView() {
  const [cfg, head, health] = await Promise.all([query("consortium", "config"), api("/v1/head"), fetch("/v1/health").then((r) => r.json())]);
  const atts = await api(`/v1/blocks/${head.header.height}`);
  const attested = new Set(atts.attestations.map((a) => (a.member || "").split("/")[0]));
  show(
    el("h1", {}, t("consortium")),
    table(["org", "hash", "type", "status", "attestations"], cfg.orgs.map((o) => el("tr", { class: "org" },
      el("td", {}, o.org_id), el("td", {}, o.name), el("td", {}, o.type), el("td", {}, o.active ? t("active") : "-"),
      el("td", { class: attested.has(o.org_id) ? "ok" : "" }, attested.has(o.org_id) ? `✓ ${t("attestedHead")} ${head.header.height}` : "")))),
    el("h2", {}, t("forks")),
    el("p", { id: "forks", class: health.status === "fork" ? "bad" : "ok" }, health.status === "fork" ? `${health.fork_alarm_summary.count} · ${health.fork_alarm_summary.members.join(", ")}` : t("none")),
  );
}

// ---- search and routing ----------------------------------------------------------------------------------
async function search(q) {
  q = q.trim();
  if (/^[0-9a-f]{64}$/.test(q)) return (location.hash = `#/tx/${q}`);
  if (/^\d+$/.test(q)) return (location.hash = `#/block/${q}`);
  if (/^(urn:epc:|https?:\/\/)/.test(q)) return (location.hash = `#/item/${encodeURIComponent(q)}`);
  try { await query("scf.vouchers", "tree", { voucher: q }); return (location.hash = `#/voucher/${q}`); } catch (e) { /* not a voucher */ }
  location.hash = `#/state/${encodeURIComponent(q)}`;
}
async function stateView(key) {
  const s = await api(`/v1/state/${key}`);
  show(el("h1", { class: "mono" }, `${t("state")} ${key}`), el("pre", {}, JSON.stringify(s, null, 1)));
}
const ROUTES = [
  [/^#\/block\/(\d+)$/, blockView], [/^#\/tx\/([0-9a-f]{64})$/, txView], [/^#\/voucher\/(.+)$/, voucherView],
  [/^#\/portfolio\/([^/]+)(?:\/(.+))?$/, portfolioView], [/^#\/book\/([^/]+)(?:\/(.+))?$/, bookView],
  [/^#\/maturities(?:\/(.+))?$/, maturitiesView],
  [/^#\/item\/(.+)$/, (id) => itemView(decodeURIComponent(id))], [/^#\/consortium$/, consortiumView],
  [/^#\/state\/(.+)$/, (k) => stateView(decodeURIComponent(k))],
];
async function route() {
  document.body.dataset.ready = "0";
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-t]").forEach((n) => (n.textContent = t(n.dataset.t)));
  document.getElementById("lang").textContent = lang === "zh" ? "English" : "中文";
  if (!token()) { document.getElementById("login").hidden = false; document.body.dataset.ready = "1"; return; }
  if (stream && !location.hash.match(/^#?\/?$/)) { stream.close(); stream = null; }
  try {
    const hit = ROUTES.find(([re]) => re.test(location.hash));
    if (hit) await hit[1](...location.hash.match(hit[0]).slice(1)); else await chainView();
  } catch (e) { fail(e); }
  document.body.dataset.ready = "1";
}
document.getElementById("search").onsubmit = (ev) => { ev.preventDefault(); search(document.getElementById("q").value); };
document.getElementById("tokenForm").onsubmit = (ev) => {
  ev.preventDefault(); sessionStorage.setItem("liangcao.token", document.getElementById("token").value.trim());
  document.getElementById("login").hidden = true; route();
};
document.getElementById("lang").onclick = () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("liangcao.lang", lang); route(); };
window.addEventListener("hashchange", route);
route();
