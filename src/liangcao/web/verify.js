// The consumer verify page: checks every event of an item's history in the browser (Web Crypto), making the
// same checks with the same messages as liangcao.trace.bundle_check (liangcao verify-proof), so that both
// agree on what "verified" means. Read that module's docstring for the whole trust model; in short:
//
// * Trust comes from the page's address, never from the bundle: anchors= names the SHA-256 fingerprints
//   (at least 128 bits) of the organisations' CA certificates and quorum= how many distinct ones must
//   attest each block (default: a strict majority of the anchors). The QR code printed on the pack
//   carries both. Without anchors nothing is verified.
// * Each event: the header hashes to the block hash; the capture transaction and its receipt are in that
//   block (RFC 9162 paths); the transaction bytes are canonical, it is a trace.capture on this chain, the
//   receipt is for its id, succeeded and lists the event as captured; every signature verifies over the tx
//   id with a certificate a trusted CA issued; the recorder is read from that certificate (never from the
//   server's "org"); at least quorum distinct trusted organisations' peers attested this block hash; and
//   the provenance walk over the proven events alone reaches the event from the item.
//
// Certificates are checked here with a small strict DER walk (certInfo below): Web Crypto verifies Ed25519
// but has no X.509 parser, and a parser library would have to be shipped with the page (no CDN). The walk
// reads only what liangcao certificates hold (tbsCertificate, the Ed25519 algorithm, issuer and subject
// names, validity, the Ed25519 key, basicConstraints) and refuses anything else: indefinite or non-minimal
// lengths, trailing bytes, other algorithms. A member certificate counts if its issuer name is the CA's
// subject name and the CA's key verifies its signature over the tbsCertificate bytes.
"use strict";

const TEXT = {
  en: {
    title: "Product history", item: "Item", checking: "Checking the proofs…",
    verified: "Verified ✓ — every event is on the ledger as shown",
    notVerified: "Not verified ✗ — do not trust this history",
    noEvents: "No events are recorded for this item.",
    how: "Every event above was checked in this browser: its transaction sits in a block by a Merkle path, it is signed by members of organisations you trust, the block's header hashes to the block hash that enough of those organisations signed, and the event belongs to this item's history. Who you trust comes from the QR code on the pack, not from the server.",
    recordedBy: "recorded by", block: "block", attested: "attested by",
    finality: (q, orgs) => `final when attested by ${q} of the organisations you trust: ${orgs}`,
  },
  zh: {
    title: "产品溯源", item: "商品", checking: "正在验证证明…",
    verified: "已验证 ✓ — 每条记录都与账本一致",
    notVerified: "未通过验证 ✗ — 请勿相信此记录",
    noEvents: "此商品没有记录。",
    how: "以上每条记录都在本浏览器中验证：交易通过默克尔路径包含在区块中，由您信任的机构成员签名，区块头的哈希即足够多的这些机构签名的区块哈希，且记录属于此商品的历史。信任哪些机构来自包装上的二维码，而非服务器。",
    recordedBy: "记录方", block: "区块", attested: "背书机构",
    finality: (q, orgs) => `需 ${q} 家您信任的机构背书：${orgs}`,
  },
};
let lang = navigator.language && navigator.language.startsWith("zh") ? "zh" : "en";

// The stable messages of liangcao.trace.bundle_check.Why (the same texts).
const WHY = {
  NO_ANCHORS: "no trust anchors were given: scan the QR code on the pack, or pass --anchors or --genesis",
  BAD_ANCHORS: "the trust anchors in the address are malformed",
  NO_EVENTS: "no events are recorded for this item",
  NO_PROOF: "no proof was given",
  MALFORMED: "the proof is malformed",
  HEADER: "the block header does not hash to the block hash",
  TX_NOT_IN_BLOCK: "the transaction is not in the block",
  RECEIPT_NOT_IN_BLOCK: "the receipt is not in the block",
  NOT_CANONICAL: "the transaction is not in canonical form",
  NOT_CAPTURE: "the transaction is not a capture on this chain",
  RECEIPT_OTHER_TX: "the receipt is for another transaction",
  NOT_CAPTURED: "the receipt does not record this event as captured",
  UNSIGNED: "the transaction is not signed",
  BAD_TX_SIGNATURE: "a signature of the transaction does not verify",
  UNTRUSTED_SIGNER: "a signer's certificate was not issued by an organisation you trust",
  SIGNER_EXPIRED: "a signer's certificate was not valid at the block's time",
  ACTOR: "the transaction names an acting party who did not sign it",
  NO_RECORDER: "no signer of the transaction may record events",
  RECORDER_LIE: "the server names another recorder than the transaction's signer",
  QUORUM: "too few trusted organisations attested the block",
  UNRELATED: "the event does not concern this item or a proven container or input of it",
};
const ANCHOR_HEX_MIN = 32, ANCHOR_HEX_MAX = 64;
const RECORDING_ROLES = ["admin", "member"];
const ROLES = ["admin", "member", "peer", "orderer"];
const ORG_TYPES = ["core_enterprise", "supplier", "bank", "insurer", "warehouse", "logistics", "platform", "regulator",
  "customs", "brand", "shipper", "carrier", "terminal"];
const HEADER_FIELDS = ["block_hash", "chain_id", "height", "prev_hash", "receipt_root", "state_hash", "time_ms", "tx_count", "tx_root"];

// ---- bytes ----------------------------------------------------------------------------------------------
const enc = new TextEncoder();
const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => {
  if (typeof h !== "string" || !/^([0-9a-f]{2})*$/.test(h)) throw new Error("not hex");
  return new Uint8Array((h.match(/../g) || []).map((x) => parseInt(x, 16)));
};
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
async function edVerify(publicKey, signature, message) {
  try {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (e) {
    return false;
  }
}
const DOMAIN_TX = enc.encode("liangcao/tx/v1\n");
const DOMAIN_ATTEST = enc.encode("liangcao/attest/v1\n");

// RFC 9162 section 2.1.3.2, step by step (the same algorithm liangcao.crypto.merkle follows).
async function verifyInclusion(leaf, index, size, path, root) {
  if (!(Number.isInteger(index) && Number.isInteger(size) && index >= 0 && index < size)) return false;
  let fn = index, sn = size - 1;
  let r = await sha256(concat(new Uint8Array([0]), leaf));
  for (const p of path) {
    if (sn === 0) return false;
    if ((fn & 1) || fn === sn) {
      r = await sha256(concat(new Uint8Array([1]), p, r));
      if (!(fn & 1)) { while (fn && !(fn & 1)) { fn >>= 1; sn >>= 1; } }
    } else {
      r = await sha256(concat(new Uint8Array([1]), r, p));
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 && equal(r, root);
}

// ---- liangcao's canonical JSON (docs/encoding.md section 1) ----------------------------------------------
// Keys sorted by code point, integers only, strings escaped with exactly \" \\ \b \t \n \f \r and \u00xx
// for other controls. A value outside the model (a float, an integer beyond 2^53 that JSON.parse rounded)
// throws, so a transaction that does not round-trip byte for byte is refused, never hashed differently.
const ESCAPES = { 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r", 34: '\\"', 92: "\\\\" };
function jsonString(s) {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ESCAPES[c]) out += ESCAPES[c];
    else if (c < 0x20) out += "\\u00" + c.toString(16).padStart(2, "0");
    else out += ch;
  }
  return out + '"';
}
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0)), y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}
function canonical(v) {
  if (v === null || v === true || v === false) return String(v);
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new Error("not a canonical integer");
    return String(v);
  }
  if (typeof v === "string") return jsonString(v);
  if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
  if (typeof v === "object") {
    return "{" + Object.keys(v).sort(byCodePoint).map((k) => jsonString(k) + ":" + canonical(v[k])).join(",") + "}";
  }
  throw new Error("not in the canonical data model");
}

// ---- a strict DER walk for liangcao's X.509 certificates (see the note at the top) --------------------
class CertError extends Error {}
function tlv(buf, pos, end) {
  if (pos + 2 > end) throw new CertError("truncated");
  const tag = buf[pos];
  if ((tag & 0x1f) === 0x1f) throw new CertError("multi-byte tag");
  let len = buf[pos + 1], head = 2;
  if (len === 0x80) throw new CertError("indefinite length");
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n > 3 || pos + 2 + n > end) throw new CertError("bad length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + 2 + i];
    if (buf[pos + 2] === 0 || len < 0x80) throw new CertError("non-minimal length");
    head = 2 + n;
  }
  const content = pos + head;
  if (content + len > end) throw new CertError("length beyond its container");
  return { tag, start: pos, content, end: content + len };
}
function children(buf, node) {
  const out = [];
  for (let at = node.content; at < node.end;) { const c = tlv(buf, at, node.end); out.push(c); at = c.end; }
  return out;
}
const bytesOf = (buf, node) => buf.slice(node.start, node.end);
const contentOf = (buf, node) => buf.slice(node.content, node.end);
const ED25519_ALG = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
const ED25519_SPKI = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const OID = { O: "55040a", OU: "55040b", CN: "550403", BUSINESS: "55040f", BASIC: "551d13" };
const utf8 = new TextDecoder("utf-8", { fatal: true });

function nameAttrs(buf, name) {
  const attrs = {};
  for (const rdn of children(buf, name)) {
    if (rdn.tag !== 0x31) throw new CertError("bad name");
    for (const atv of children(buf, rdn)) {
      const [oid, value, ...rest] = atv.tag === 0x30 ? children(buf, atv) : [];
      if (!oid || oid.tag !== 0x06 || !value || rest.length) throw new CertError("bad name attribute");
      const bytes = contentOf(buf, value);
      let text;
      if (value.tag === 0x0c) text = utf8.decode(bytes);
      else if (value.tag === 0x13 || value.tag === 0x16) text = String.fromCharCode(...bytes);
      else text = null;
      (attrs[hex(contentOf(buf, oid))] ||= []).push(text);
    }
  }
  const one = (oid) => (attrs[oid] && attrs[oid].length === 1 && typeof attrs[oid][0] === "string" ? attrs[oid][0] : "");
  return { org: one(OID.O), role: one(OID.OU), cn: one(OID.CN), orgType: one(OID.BUSINESS) };
}
function derTime(buf, node) {
  const s = String.fromCharCode(...contentOf(buf, node));
  const m = node.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
    : node.tag === 0x18 ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  if (!m) throw new CertError("bad time");
  let year = Number(m[1]);
  if (node.tag === 0x17) year += year < 50 ? 2000 : 1900;
  return Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}
function basicConstraintsCa(buf, extensions) {
  let isCa = false;
  const seen = new Set();
  for (const ext of children(buf, extensions)) {
    const parts = ext.tag === 0x30 ? children(buf, ext) : [];
    if (parts.length < 2 || parts[0].tag !== 0x06) throw new CertError("bad extension");
    const oid = hex(contentOf(buf, parts[0]));
    if (seen.has(oid)) throw new CertError("duplicate extension");
    seen.add(oid);
    const value = parts[parts.length - 1];
    if (value.tag !== 0x04 || parts.length > 3 || (parts.length === 3 && parts[1].tag !== 0x01)) throw new CertError("bad extension");
    if (oid !== OID.BASIC) continue;
    const seq = tlv(buf, value.content, value.end);
    if (seq.tag !== 0x30 || seq.end !== value.end) throw new CertError("bad basicConstraints");
    const fields = children(buf, seq);
    if (fields.length && fields[0].tag === 0x01) {
      const v = contentOf(buf, fields[0]);
      if (v.length !== 1 || (v[0] !== 0xff && v[0] !== 0)) throw new CertError("bad boolean");
      isCa = v[0] === 0xff;
    }
  }
  return isCa;
}
// What liangcao.crypto.identity.parse_certificate reads from one certificate, or a CertError.
function certInfo(bytes) {
  const cert = tlv(bytes, 0, bytes.length);
  if (cert.tag !== 0x30 || cert.end !== bytes.length) throw new CertError("not one DER certificate");
  const [tbs, alg, sig, ...extra] = children(bytes, cert);
  if (!sig || extra.length || tbs.tag !== 0x30) throw new CertError("bad certificate");
  if (!equal(bytesOf(bytes, alg), ED25519_ALG)) throw new CertError("not Ed25519");
  const sigBytes = contentOf(bytes, sig);
  if (sig.tag !== 0x03 || sigBytes.length !== 65 || sigBytes[0] !== 0) throw new CertError("bad signature");
  const f = children(bytes, tbs);
  let i = 0;
  if (f[i] && f[i].tag === 0xa0) i++; // version
  const [serial, tbsAlg, issuer, validity, subject, spki] = f.slice(i, i + 6);
  if (!spki || serial.tag !== 0x02 || issuer.tag !== 0x30 || validity.tag !== 0x30 || subject.tag !== 0x30) throw new CertError("bad tbsCertificate");
  if (!equal(bytesOf(bytes, tbsAlg), ED25519_ALG)) throw new CertError("not Ed25519");
  const key = bytesOf(bytes, spki);
  if (key.length !== 44 || !equal(key.slice(0, 12), ED25519_SPKI)) throw new CertError("key is not Ed25519");
  const rest = f.slice(i + 6);
  if (rest.length > 1 || (rest.length && rest[0].tag !== 0xa3)) throw new CertError("unexpected fields");
  let isCa = false;
  if (rest.length) {
    const exts = children(bytes, rest[0]);
    if (exts.length !== 1 || exts[0].tag !== 0x30) throw new CertError("bad extensions");
    isCa = basicConstraintsCa(bytes, exts[0]);
  }
  const times = children(bytes, validity);
  if (times.length !== 2) throw new CertError("bad validity");
  const names = nameAttrs(bytes, subject);
  if (!names.org || !names.cn || ![...ROLES, "ca"].includes(names.role) || !ORG_TYPES.includes(names.orgType)) {
    throw new CertError("certificate subject lacks O, CN, a known OU role or a known businessCategory");
  }
  if (isCa !== (names.role === "ca")) throw new CertError("certificate CA flag and role disagree");
  return {
    ...names, isCa, memberId: `${names.org}/${names.cn}`,
    tbs: bytesOf(bytes, tbs), signature: sigBytes.slice(1), key: key.slice(12),
    issuer: bytesOf(bytes, issuer), subject: bytesOf(bytes, subject),
    notBefore: derTime(bytes, times[0]), notAfter: derTime(bytes, times[1]),
  };
}
const parsedCerts = new Map();
function certFromB64(b64) {
  if (!parsedCerts.has(b64)) {
    let info = null;
    try { info = certInfo(unb64(b64)); } catch (e) { info = null; }
    parsedCerts.set(b64, info);
  }
  return parsedCerts.get(b64);
}
async function issuedBy(member, ca) {
  return equal(member.issuer, ca.subject) && edVerify(ca.key, member.signature, member.tbs);
}

// ---- trust: from the address, never from the bundle -----------------------------------------------------
function trustFromAddress(params) {
  const raw = params.get("anchors");
  if (!raw) throw new Error(WHY.NO_ANCHORS);
  const anchors = [];
  for (const a of raw.toLowerCase().split(",").map((x) => x.trim()).filter(Boolean)) {
    if (!new RegExp(`^[0-9a-f]{${ANCHOR_HEX_MIN},${ANCHOR_HEX_MAX}}$`).test(a)) throw new Error(WHY.BAD_ANCHORS);
    if (!anchors.includes(a)) anchors.push(a);
  }
  if (!anchors.length) throw new Error(WHY.NO_ANCHORS);
  let quorum = Math.floor(anchors.length / 2) + 1;
  if (params.get("quorum")) {
    quorum = Number(params.get("quorum"));
    if (!Number.isInteger(quorum) || quorum < 1 || quorum > anchors.length) throw new Error(WHY.BAD_ANCHORS);
  }
  return { anchors, quorum };
}
// One CA per anchor: a bundle certificate whose fingerprint, computed here, starts with the anchor and that is
// a self-signed liangcao CA certificate.
async function trustedCAs(orgs, anchors) {
  const out = [];
  for (const anchor of anchors) {
    for (const o of Array.isArray(orgs) ? orgs : []) {
      let bytes;
      try { bytes = unb64(o.ca_cert); } catch (e) { continue; }
      const fingerprint = hex(await sha256(bytes));
      if (!fingerprint.startsWith(anchor)) continue;
      const info = certFromB64(o.ca_cert);
      if (info && info.isCa && info.role === "ca" && (await issuedBy(info, info))) {
        out.push({ org: info.org, info, fingerprint });
        break;
      }
    }
  }
  return out;
}
// (certificate, the trusted CA that issued it, valid at timeMs), as bundle_check._member.
async function member(b64, cas, timeMs) {
  const info = certFromB64(b64);
  if (!info) return { info: null, ca: null, valid: false };
  if (info.isCa) return { info, ca: null, valid: false };
  for (const ca of cas) {
    if (ca.info.org === info.org && ca.info.orgType === info.orgType && (await issuedBy(info, ca.info))) {
      const seconds = (ms) => Math.floor(ms / 1000) * 1000;
      return { info, ca, valid: seconds(info.notBefore) <= timeMs && timeMs <= seconds(info.notAfter) };
    }
  }
  return { info, ca: null, valid: false };
}

// ---- one event ----------------------------------------------------------------------------------------------
async function attestingOrg(att, header, blockHash, cas) {
  if (!att || typeof att !== "object" || Object.keys(att).sort().join() !== "block_hash,cert,chain_id,height,sig,state_hash") return null;
  if (att.chain_id !== header.chain_id || att.height !== header.height || att.block_hash !== blockHash || att.state_hash !== header.state_hash) return null;
  if (typeof att.cert !== "string" || typeof att.sig !== "string") return null;
  const m = await member(att.cert, cas, header.time_ms);
  if (!m.info || !m.ca || !m.valid || m.info.role !== "peer") return null;
  const body = { block_hash: att.block_hash, chain_id: att.chain_id, height: att.height, state_hash: att.state_hash };
  const digest = await sha256(enc.encode(canonical(body)));
  let sig;
  try { sig = unb64(att.sig); } catch (e) { return null; }
  return (await edVerify(m.info.key, sig, concat(DOMAIN_ATTEST, digest))) ? m.ca.org : null;
}

async function checkSigners(tx, txId, cas, timeMs, out) {
  const sigs = Array.isArray(tx.signatures) ? tx.signatures : [];
  if (!sigs.length) { out.problems.push(WHY.UNSIGNED); return; }
  const signers = [];
  for (const s of sigs) {
    const m = await member(String(s && s.cert), cas, timeMs);
    let sig = null;
    try { sig = unb64(s.sig); } catch (e) { sig = null; }
    if (!m.info || !sig || !(await edVerify(m.info.key, sig, concat(DOMAIN_TX, txId)))) { out.problems.push(WHY.BAD_TX_SIGNATURE); return; }
    if (!m.ca) { out.problems.push(WHY.UNTRUSTED_SIGNER); return; }
    if (!m.valid) { out.problems.push(WHY.SIGNER_EXPIRED); return; }
    signers.push(m.info);
  }
  // The runtime's order: the named actor first, then the rest by member id; the trace contract records the
  // first of them with a recording role.
  const cmp = (a, b) => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0);
  let ordered = [...signers].sort(cmp);
  const actor = tx.body.actor;
  if (actor) {
    const acting = ordered.filter((i) => i.memberId === actor);
    if (!acting.length) { out.problems.push(WHY.ACTOR); return; }
    ordered = [...acting, ...ordered.filter((i) => i.memberId !== actor)];
  }
  const recorder = ordered.find((i) => RECORDING_ROLES.includes(i.role));
  if (!recorder) { out.problems.push(WHY.NO_RECORDER); return; }
  out.recordedBy = recorder.memberId;
  out.org = recorder.org;
}

function checkHeader(h) {
  if (!h || typeof h !== "object" || Array.isArray(h)) return false;
  const keys = Object.keys(h).sort();
  const want = HEADER_FIELDS.filter((k) => k !== "block_hash");
  return keys.length === want.length && keys.every((k, i) => k === want[i])
    && ["height", "time_ms", "tx_count"].every((k) => Number.isSafeInteger(h[k]) && h[k] >= 0);
}

async function checkEvent(ev, chainId, cas, quorum) {
  const out = { id: String((ev && ev.id) || ""), problems: [], orgs: [], recordedBy: "", org: "", height: null, event: null, facts: null };
  const p = ev && ev.proof;
  if (!p || typeof p !== "object") { out.problems.push(WHY.NO_PROOF); return out; }
  let header, blockHash, tx, receipt, txId;
  try {
    header = p.tx.header;
    if (!checkHeader(header)) throw new Error("header");
    blockHash = hex(await sha256(enc.encode(canonical(header))));
    if (blockHash !== p.tx.block_hash || canonical(p.receipt.header) !== canonical(header)) out.problems.push(WHY.HEADER);
    out.height = header.height;
    if (!(await verifyInclusion(enc.encode(p.tx.leaf), p.tx.index, header.tx_count, p.tx.path.map(unhex), unhex(header.tx_root)))) out.problems.push(WHY.TX_NOT_IN_BLOCK);
    if (p.receipt.index !== p.tx.index || !(await verifyInclusion(enc.encode(p.receipt.leaf), p.receipt.index, header.tx_count, p.receipt.path.map(unhex), unhex(header.receipt_root)))) out.problems.push(WHY.RECEIPT_NOT_IN_BLOCK);
    tx = JSON.parse(p.tx.leaf);
    receipt = JSON.parse(p.receipt.leaf);
    if (!tx || typeof tx.body !== "object" || !tx.body || Array.isArray(tx.body)) throw new Error("tx");
  } catch (e) {
    out.problems.push(WHY.MALFORMED);
    return out;
  }
  let canon = null;
  try { canon = canonical(tx); } catch (e) { canon = null; }
  if (canon !== p.tx.leaf) { out.problems.push(WHY.NOT_CANONICAL); return out; }
  txId = await sha256(enc.encode(canonical(tx.body)));
  const body = tx.body;
  if (body.contract !== "trace" || body.method !== "capture" || body.chain_id !== chainId || header.chain_id !== chainId) out.problems.push(WHY.NOT_CAPTURE);
  if (!receipt || receipt.tx_id !== hex(txId)) { out.problems.push(WHY.RECEIPT_OTHER_TX); return out; }
  const results = Array.isArray(receipt.result) ? receipt.result : [];
  const k = results.findIndex((r) => r && r.id === out.id);
  let proven = false;
  if (receipt.code !== 0 || k < 0 || results[k].status !== "captured") out.problems.push(WHY.NOT_CAPTURED);
  else {
    // The event's hash id was recomputed by every peer that executed this (attested) block; the page shows
    // the event text from the proven bytes and relies on the receipt for the id (verify-proof recomputes it).
    try {
      out.event = JSON.parse(body.args.events[k]);
      out.facts = facts(out.event);
      proven = true;
    } catch (e) {
      out.problems.push(WHY.MALFORMED);
    }
  }
  await checkSigners(tx, txId, cas, header.time_ms, out);
  if (out.org && ((ev.org != null && ev.org !== out.org) || (ev.by != null && ev.by !== out.recordedBy))) out.problems.push(WHY.RECORDER_LIE);
  const orgs = new Set();
  for (const att of Array.isArray(p.attestations) ? p.attestations : []) {
    const org = await attestingOrg(att, header, blockHash, cas);
    if (org) orgs.add(org);
  }
  out.orgs = [...orgs].sort();
  if (out.orgs.length < quorum) out.problems.push(`${WHY.QUORUM} (${out.orgs.length} of ${quorum} needed)`);
  if (!proven) out.facts = null;
  return out;
}

// ---- what an event is about: liangcao.trace.facts and identifiers, for the provenance walk -------------
const DL_ROOT = "https://id.gs1.org";
const SHORT_NAMES = { gtin: "01", sscc: "00", gln: "414", party: "417", ser: "21", lot: "10", cpv: "22", gdti: "253",
  gcn: "255", ginc: "401", gsin: "402", grai: "8003", giai: "8004", itip: "8006", cpid: "8010", cpsn: "8011",
  gsrnp: "8017", gsrn: "8018", glnx: "254" };
const QUALIFIERS = Object.assign(Object.create(null), { "01": ["21", "235", "10"], "414": ["254"], "8006": ["21", "10"], "8010": ["8011"] });
const PRIMARY = new Set(["00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8017", "8018"]);
const short = (s) => (Object.prototype.hasOwnProperty.call(SHORT_NAMES, s) ? SHORT_NAMES[s] : s);

function checkDigit(digits) {
  const rev = [...digits].reverse();
  let total = 0;
  rev.forEach((d, i) => {
    if (!/^[0-9]$/.test(d)) throw new Error("not a digit");
    total += (i % 2 === 0 ? 3 : 1) * Number(d);
  });
  return String((10 - (total % 10)) % 10);
}
// Python's urllib.parse.unquote (UTF-8, invalid escapes kept) then quote(safe="'").
function pyUnquote(s) {
  return s.replace(/(%[0-9A-Fa-f]{2})+/g, (run) => new TextDecoder().decode(unhex(run.replace(/%/g, "").toLowerCase())));
}
function pyQuote(s) {
  return Array.from(enc.encode(s), (b) => {
    const c = String.fromCharCode(b);
    return /[A-Za-z0-9_.\-~']/.test(c) ? c : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }).join("");
}
const escapeComponent = (c) => pyQuote(pyUnquote(c));

function epcUrnToDl(urn) {
  const m = /^urn:epc:(id|class|idpat):([a-z]+):(.*)$/.exec(urn);
  if (!m) return null;
  const [, kind, scheme, body] = m;
  const parts = body.split(".");
  const at = (i) => { if (i >= parts.length) throw new RangeError("index"); return parts[i]; };
  const from = (i) => parts.slice(i).join(".");
  const gtin = (cp, indRef) => { const base = indRef.slice(0, 1) + cp + indRef.slice(1); return base + checkDigit(base); };
  const key = (cp, ref) => cp + ref + checkDigit(cp + ref);
  try {
    if (kind === "idpat") {
      if (scheme === "sgtin" || scheme === "upui") return `${DL_ROOT}/01/${gtin(at(0), at(1))}`;
      if (scheme === "itip") return `${DL_ROOT}/8006/${gtin(at(0), at(1))}${at(2)}${at(3)}`;
      if (scheme === "grai") return `${DL_ROOT}/8003/0${key(at(0), at(1))}`;
      if (scheme === "gdti") return `${DL_ROOT}/253/${key(at(0), at(1))}`;
      if (scheme === "sgcn") return `${DL_ROOT}/255/${key(at(0), at(1))}`;
      if (scheme === "cpi") return `${DL_ROOT}/8010/${at(0)}${escapeComponent(at(1))}`;
      return null;
    }
    if (kind === "class") {
      if (scheme === "lgtin") return `${DL_ROOT}/01/${gtin(at(0), at(1))}/10/${escapeComponent(from(2))}`;
      return null;
    }
    switch (scheme) {
      case "sgtin": return `${DL_ROOT}/01/${gtin(at(0), at(1))}/21/${escapeComponent(from(2))}`;
      case "sscc": { const ref = at(1); return `${DL_ROOT}/00/${key(ref.slice(0, 1) + at(0), ref.slice(1))}`; }
      case "sgln": {
        const gln = key(at(0), at(1)), ext = from(2);
        return `${DL_ROOT}/414/${gln}` + (ext && ext !== "0" ? `/254/${escapeComponent(ext)}` : "");
      }
      case "pgln": return `${DL_ROOT}/417/${key(at(0), at(1))}`;
      case "grai": return `${DL_ROOT}/8003/0${key(at(0), at(1))}${escapeComponent(from(2))}`;
      case "giai": return `${DL_ROOT}/8004/${at(0)}${escapeComponent(from(1))}`;
      case "gsrn": return `${DL_ROOT}/8018/${key(at(0), at(1))}`;
      case "gsrnp": return `${DL_ROOT}/8017/${key(at(0), at(1))}`;
      case "gdti": return `${DL_ROOT}/253/${key(at(0), at(1))}${escapeComponent(from(2))}`;
      case "sgcn": return `${DL_ROOT}/255/${key(at(0), at(1))}${escapeComponent(from(2))}`;
      case "cpi": return `${DL_ROOT}/8010/${at(0)}${escapeComponent(at(1))}/8011/${escapeComponent(from(2))}`;
      case "ginc": return `${DL_ROOT}/401/${at(0)}${escapeComponent(from(1))}`;
      case "gsin": return `${DL_ROOT}/402/${key(at(0), at(1))}`;
      case "itip": return `${DL_ROOT}/8006/${gtin(at(0), at(1))}${at(2)}${at(3)}/21/${escapeComponent(from(4))}`;
      case "upui": return `${DL_ROOT}/01/${gtin(at(0), at(1))}/235/${escapeComponent(from(2))}`;
      default: return null;
    }
  } catch (e) {
    if (e instanceof RangeError) return null;
    throw e;
  }
}
function constrainDl(uri) {
  const m = /^(https?):\/\/([^/?#]*)([^?#]*)/.exec(uri);
  if (!m || !m[3]) return null;
  const segments = m[3].replace(/^\/+|\/+$/g, "").split("/");
  let start = -1;
  for (let i = 0; i < segments.length - 1; i++) if (PRIMARY.has(short(segments[i]))) { start = i; break; }
  if (start < 0) return null;
  const rest = segments.slice(start);
  if (rest.length % 2) return null;
  const pairs = new Map();
  for (let i = 0; i < rest.length; i += 2) if (!pairs.has(short(rest[i]))) pairs.set(short(rest[i]), rest[i + 1]);
  const primary = short(rest[0]);
  let out = `${DL_ROOT}/${primary}/${pairs.get(primary)}`;
  for (const q of QUALIFIERS[primary] || []) if (pairs.has(q)) { out += `/${q}/${pairs.get(q)}`; break; }
  return out;
}
// The form identifiers are compared in (liangcao.trace.facts.index_form, without its digest of long ones:
// equal texts, equal forms).
function indexForm(id) {
  const dl = id.startsWith("urn:epc:") ? epcUrnToDl(id) : /^https?:\/\//.test(id) ? constrainDl(id) : null;
  return dl ? dl.slice(DL_ROOT.length + 1) : id;
}
const TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/;
function timeMs(text) {
  const m = typeof text === "string" ? TIME.exec(text.trim()) : null;
  if (!m) throw new Error("eventTime");
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s);
  if (zone !== "Z") ms -= (zone[0] === "-" ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6))) * 60000;
  return ms + Number(((frac || "") + "000").slice(0, 3));
}
const EVENT_TYPES = ["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"];
const ROLE_LISTS = [["epcList", "epc"], ["childEPCs", "child"], ["inputEPCList", "input"], ["outputEPCList", "output"]];
const QTY_LISTS = [["quantityList", "qty"], ["childQuantityList", "child_qty"], ["inputQuantityList", "input_qty"], ["outputQuantityList", "output_qty"]];
function facts(event) {
  if (!event || typeof event !== "object" || Array.isArray(event) || !EVENT_TYPES.includes(event.type)) throw new Error("event");
  const ids = [], seen = new Set();
  const add = (role, id) => { const f = indexForm(id), key = role + " " + f; if (!seen.has(key)) { seen.add(key); ids.push([role, f]); } };
  for (const [name, role] of ROLE_LISTS) {
    const list = event[name] || [];
    if (!Array.isArray(list) || !list.every((e) => typeof e === "string" && e)) throw new Error(name);
    list.forEach((e) => add(role, e));
  }
  if (event.parentID !== undefined && event.parentID !== null && !(typeof event.parentID === "string" && event.parentID)) throw new Error("parentID");
  if (event.parentID) add("parent", event.parentID);
  for (const [name, role] of QTY_LISTS) {
    const list = event[name] || [];
    if (!Array.isArray(list)) throw new Error(name);
    for (const q of list) {
      if (!(q && typeof q.epcClass === "string" && q.epcClass)) throw new Error(name);
      add(role, q.epcClass);
    }
  }
  const of = (...roles) => ids.filter(([r]) => roles.includes(r)).map(([, i]) => i);
  return { type: event.type, timeMs: timeMs(event.eventTime), action: String(event.action || ""), ids, of };
}

// liangcao.trace.provenance's walk over the proven events alone (bundle_check.concerned): the hex ids of the
// events that belong to the item's history.
const NEVER = 10_000_000_000_000;
const PROVENANCE_IDS_MAX = 2000;
function concerned(item, proven) {
  const named = new Map();
  for (const [hx, f] of proven) {
    const byId = new Map();
    for (const [role, id] of f.ids) { if (!byId.has(id)) byId.set(id, new Set()); byId.get(id).add(role); }
    for (const [id, roles] of byId) { if (!named.has(id)) named.set(id, []); named.get(id).push([f.timeMs, hx, roles]); }
  }
  for (const list of named.values()) list.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const out = new Set(), seen = new Set(), queue = [[indexForm(item), 0, NEVER]];
  while (queue.length) {
    let [id, lo, hi] = queue.shift();
    const stepKey = `${id} ${lo} ${hi}`;
    if (seen.has(stepKey)) continue;
    if (seen.size >= PROVENANCE_IDS_MAX) break;
    seen.add(stepKey);
    const loaded = (named.get(id) || []).filter(([t]) => lo <= t && t < hi);
    for (const [t, hx, roles] of loaded) {
      const f = proven.get(hx);
      if (f.type === "AggregationEvent" && f.action === "DELETE" && roles.has("parent") && !f.of("child").length) hi = Math.min(hi, t + 1);
    }
    for (const [t, hx, roles] of loaded) {
      if (t >= hi) continue;
      const f = proven.get(hx);
      out.add(hx);
      if (f.type === "AggregationEvent" && roles.has("child") && (f.action === "ADD" || f.action === "OBSERVE")) {
        for (const parent of f.of("parent")) queue.push([parent, t, removed(loaded, proven, parent, t, hi)]);
      }
      if (f.type === "TransformationEvent" && (roles.has("output") || roles.has("output_qty"))) {
        for (const source of new Set(f.of("input", "input_qty"))) queue.push([source, 0, t + 1]);
      }
    }
  }
  return out;
}
function removed(loaded, proven, parent, after, hi) {
  for (const [t, hx, roles] of loaded) {
    const f = proven.get(hx);
    const removal = t > after && roles.has("child") && f.type === "AggregationEvent" && f.action === "DELETE";
    if (removal && (f.of("parent").includes(parent) || !f.of("parent").length)) return Math.min(t, hi);
  }
  return hi;
}
const hexOf = (id) => { const m = /^ni:\/\/\/sha-256;([0-9a-f]{64})\?ver=CBV2\.0$/.exec(id); return m ? m[1] : ""; };

// Every check of a bundle against the trust from the address (bundle_check.check_bundle).
async function checkBundle(bundle, trust, item) {
  const result = { events: [], problems: [], quorum: 0, trusted: [] };
  const told = bundle.finality_quorum;
  result.quorum = Math.max(trust.quorum, Number.isSafeInteger(told) ? told : 0);
  const cas = await trustedCAs(bundle.organisations, trust.anchors);
  result.trusted = [...new Set(cas.map((c) => c.org))].sort();
  result.cas = cas;
  const chainId = String(bundle.chain_id || "");
  const proven = new Map();
  for (const ev of Array.isArray(bundle.events) ? bundle.events : []) {
    const check = await checkEvent(ev, chainId, cas, result.quorum);
    check.type = ev && ev.type;
    result.events.push(check);
    if (!check.problems.length && check.facts) proven.set(hexOf(check.id), check.facts);
  }
  const related = concerned(item, proven);
  for (const check of result.events) {
    if (!check.problems.length && !related.has(hexOf(check.id))) check.problems.push(WHY.UNRELATED);
  }
  if (!result.events.length) result.problems.push(WHY.NO_EVENTS);
  return result;
}

// ---- the page -------------------------------------------------------------------------------------------
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function render(state) {
  const t = TEXT[lang];
  document.querySelectorAll("[data-i18n]").forEach((n) => { if (typeof t[n.dataset.i18n] === "string" && n.id !== "result") n.textContent = t[n.dataset.i18n]; });
  document.getElementById("lang").textContent = lang === "en" ? "中文" : "English";
  const result = document.getElementById("result");
  result.dataset.state = state.verdict;
  result.textContent = state.verdict === "checking" ? t.checking : state.verdict === "verified" ? t.verified : t.notVerified;
  const reasons = document.getElementById("reasons");
  reasons.replaceChildren(...state.reasons.map((r) => el("li", {}, r)));
  const list = document.getElementById("events");
  list.replaceChildren(...state.events.map((e) => {
    const box = el("div", { class: "event" + (e.problems.length ? " bad" : ""), "data-event-id": e.id });
    const shown = e.event || {};
    box.append(el("div", {}, `${shown.eventTime || ""} · ${shown.type || e.type || ""} · ${shown.bizStep || ""} ${shown.disposition ? "· " + shown.disposition : ""}`));
    // Who recorded it comes from the signer's certificate, never from the server's bundle.
    const by = e.recordedBy ? `${e.org} (${e.recordedBy})` : "—";
    box.append(el("div", { class: "meta", "data-recorded-by": e.org }, `${t.recordedBy} ${by} · ${t.block} ${e.height ?? "—"} · ${t.attested} ${e.orgs.join(", ") || "—"}`));
    box.append(el("div", { class: e.problems.length ? "fail" : "ok" }, e.problems.length ? e.problems.join("; ") : "✓"));
    return box;
  }));
  const trusted = state.cas.map((c) => `${c.org} (${c.fingerprint.slice(0, 12)}…)`).join(", ");
  document.getElementById("finality").textContent = state.quorum ? t.finality(state.quorum, trusted || "—") : "";
}

async function main() {
  const params = new URLSearchParams(location.search);
  const id = params.get("id") || "";
  document.getElementById("item").textContent = id;
  const state = { verdict: "checking", reasons: [], events: [], quorum: 0, cas: [] };
  document.getElementById("lang").onclick = () => { lang = lang === "en" ? "zh" : "en"; render(state); };
  render(state);
  try {
    const trust = trustFromAddress(params);
    const r = await fetch("/v1/trace/verify?id=" + encodeURIComponent(id));
    const bundle = await r.json();
    if (!r.ok) throw new Error(bundle.message || r.statusText);
    const result = await checkBundle(bundle, trust, id);
    Object.assign(state, { events: result.events, quorum: result.quorum, cas: result.cas });
    state.reasons.push(...result.problems);
    const bad = state.events.filter((e) => e.problems.length);
    bad.forEach((e) => state.reasons.push(`${e.id}: ${e.problems.join("; ")}`));
    state.verdict = state.events.length && !bad.length && !result.problems.length ? "verified" : "not-verified";
  } catch (e) {
    state.verdict = "not-verified";
    state.reasons.push(String(e.message || e));
  }
  render(state);
  document.body.dataset.done = "1";
}

if (!window.LIANGCAO_VERIFY_NO_MAIN) main();
