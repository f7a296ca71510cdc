// The receivable ABS view: a deal's status, tranche balances, triggers, pool and payment dates, read from
// /v1/abs with the viewer's bearer token (as the explorer reads its API). Amounts are integer fen, shown
// as yuan with integer arithmetic only.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("liangcao.token", params.get("token"));
  history.replaceState(null, "", location.pathname + location.hash);
}
const token = () => sessionStorage.getItem("liangcao.token") || "";
const view = document.getElementById("view");

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  const body = await r.json();
  if (!r.ok) throw new Error(`${body.code} ${body.message}`);
  return body;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function yuan(fen) {
  const n = BigInt(fen);
  const sign = n < 0n ? "-" : "";
  const a = n < 0n ? -n : n;
  return `${sign}${(a / 100n).toLocaleString("en")}.${String(a % 100n).padStart(2, "0")}`;
}

function table(cls, head, rows) {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join("");
  const tr = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("");
  return `<table class="${cls}"><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
}

async function list() {
  const { deals } = await api("/v1/abs/deals");
  view.innerHTML = `<h1>ABS deals</h1>` + (deals.length
    ? table("deals", ["deal", "SPV"], deals.map((d) => [`<a href="#/${esc(d.deal)}">${esc(d.deal.slice(0, 13))}…</a>`, esc(d.spv)]))
    : "<p>No deal yet.</p>");
}

async function show(id) {
  const { deal, report, pool } = await api(`/v1/abs/deals/${encodeURIComponent(id)}`);
  const f = report.figures;
  const tranches = report.tranches.map((t) => [
    esc(t.name), yuan(t.face), yuan(t.outstanding), `${(t.factor_bps / 100).toFixed(2)} %`,
    `${t.coupon_bps} bp ${esc(t.day_count)}`, yuan(t.interest_shortfall), esc(t.legal_maturity),
    esc(t.ratings.map((r) => `${r.rating} (${r.agency})`).join(", ") || "–"),
  ]);
  const triggers = report.triggers.map((t) => [esc(t.kind), esc(t.date), esc(t.effect)]);
  const assets = pool.map((a) => [esc(a.id.slice(0, 13)) + "…", esc(a.obligor), yuan(a.face), yuan(a.price), esc(a.maturity), esc(a.state)]);
  const obligors = report.by_obligor.map((o) => [esc(o.obligor), yuan(o.face), `${(o.share_bps / 100).toFixed(2)} %`]);
  const payments = report.payments.map((p) => [
    esc(p.number), esc(p.date), esc(p.status), yuan(p.available), yuan(p.paid_out), yuan(p.retained),
    p.steps.map((s) => `${esc(s.step)} ${yuan(s.paid)}${s.short ? ` (short ${yuan(s.short)})` : ""}`).join("<br>"),
  ]);
  view.innerHTML = `
    <h1>Deal ${esc(deal.id.slice(0, 13))}…</h1>
    <p>SPV ${esc(deal.spv)} · originator ${esc(deal.originator)} · servicer ${esc(deal.servicer)} ·
       custodian ${esc(deal.custodian)} · status <strong class="status">${esc(deal.status)}</strong> · as of ${esc(report.as_of)}</p>
    <h2>Pool</h2>
    ${table("figures", ["performing", "delinquent", "defaulted", "required", "notes outstanding", "cash", "cumulative defaults"],
      [[yuan(f.performing), yuan(f.delinquent), yuan(f.defaulted), yuan(f.required), yuan(f.notes_outstanding), yuan(f.cash), `${(report.cumulative_default_bps / 100).toFixed(2)} %`]])}
    <h2>Tranches</h2>
    ${table("tranches", ["tranche", "face", "outstanding", "factor", "coupon", "interest short", "legal maturity", "ratings"], tranches)}
    <h2>Triggers</h2>
    ${triggers.length ? table("triggers", ["trigger", "date", "effect"], triggers) : "<p>None has fired.</p>"}
    <h2>Obligors</h2>
    ${table("obligors", ["obligor", "face", "share"], obligors)}
    <h2>Receivables</h2>
    ${table("assets", ["voucher", "obligor", "face", "price", "maturity", "state"], assets)}
    <h2>Payment dates</h2>
    ${payments.length ? table("payments", ["#", "date", "order", "available", "paid out", "retained", "waterfall"], payments) : "<p>None yet.</p>"}`;
}

async function route() {
  if (!token()) { document.getElementById("login").hidden = false; document.body.dataset.ready = "1"; return; }
  const id = location.hash.replace(/^#\/?/, "");
  try {
    if (id) await show(id); else await list();
  } catch (e) {
    view.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
  document.body.dataset.ready = "1";
}

document.getElementById("tokenForm").onsubmit = (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("liangcao.token", document.getElementById("token").value.trim());
  document.getElementById("login").hidden = true;
  route();
};
window.addEventListener("hashchange", () => { delete document.body.dataset.ready; route(); });
route();
