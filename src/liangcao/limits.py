"""Every bound liangcao enforces, named once. Units come last in the name (``_ms``, ``_bytes``).

Relations between the limits are checked at import, so a bad edit fails at once and not in production.
"""

from __future__ import annotations

# Values of the canonical data model.
int_min = -(2**63)
int_max = 2**63 - 1
value_depth_max = 32
money_fen_max = 10**15  # one amount of money (liangcao.domain.Money): ten trillion yuan, in fen

# A transaction on the wire.
tx_bytes_max = 64 * 1024
args_depth_max = 16
signatures_max = 8
nonce_chars_max = 64
contract_name_chars_max = 64
method_name_chars_max = 64
member_id_chars_max = 129  # org/member: 64 characters each and the slash
tx_ttl_ms_max = 24 * 60 * 60 * 1000

# What one transaction may do.
key_bytes_max = 256
value_bytes_max = 32 * 1024
writes_per_tx_max = 1024
events_per_tx_max = 256
event_bytes_max = 8 * 1024
range_results_max = 10_000
call_depth_max = 4
message_chars_max = 512

# Blocks.
block_txs_max = 2000
block_bytes_max = 16 * 1024 * 1024

# The node.
mempool_txs_max = 50_000
# The mempool's transactions, counted by their encoded size: a transaction waits there parsed, several times its
# size in memory (an EPCIS capture of 61 events is about 20 KB on the wire; 50,000 of them took a node to 10 GB),
# so a count alone lets large ones take gigabytes. Two full blocks and more.
mempool_bytes_max = 32 * 1024 * 1024

# The node's memory of recent commits, for clients waiting on a transaction.
recent_txs_max = 200_000
# Consortium ordering: a cut's time may differ from the stream's own timestamp of the cut message by at most
# this much (orderers and servers keep NTP time), and a peer never commits a block stamped further ahead of
# its own clock.
cut_clock_skew_ms_max = 30_000
attestation_bytes_max = 4 * 1024  # one attestation message: four fields, a certificate and a signature
fork_alarms_max = 1000  # disagreeing attestations a node keeps as evidence (one stops finality)
early_attestation_heights_max = 1000  # attestations for heights this far ahead of the head are kept for later
attestation_reannounce_heights_max = 1000  # a starting peer re-publishes its attestations of this many last heights
attestation_repair_heights_max = 256  # non-final heights a peer fetches attestations for (and re-announces) at once

# Identity.
cert_cache_max = 100_000
orgs_max = 256

# The HTTP API.
wait_ms_max = 60_000
page_blocks_max = 100
page_state_max = 1000
batch_txs_max = 2000
batch_bytes_max = 16 * 1024 * 1024
sse_queue_max = 10_000
replay_window_blocks = 100
token_ttl_days_max = 366

# Supply-chain finance.
split_children_max = 64
invoices_per_instrument_max = 64
rate_bps_max = 10_000  # 100 % a year
tree_nodes_max = 5_000
endorsements_max = 64
pool_assets_max = 1000  # assets in one factoring pool (a draw reads them all)
pool_assign_max = 64  # assets assigned in one transaction
pool_tenor_days_max = 366  # an invoice assigned to a pool is due within a year
voucher_leaves_max = 1000  # parts one root voucher may ever be split into: a budget shared out by face at each split
split_depth_max = 16  # splits between a root voucher and its deepest part (each adds ".n" to the part's id)
settle_page_max = 64  # leaves one settlement (or overdue marking) transaction handles; the rest in later pages
sweep_page_max = 64  # settled vouchers one factoring sweep collects; the rest in later sweeps
scf_page_max = 100  # entries in one page of an SCF read model (maturities, portfolios, books, roots, pools)

# Traceability (EPCIS 2.0).
trace_events_per_tx_max = 64  # events anchored by one capture transaction
trace_event_bytes_max = 24 * 1024  # one event's JSON (it is stored whole, within value_bytes_max)
trace_ids_per_event_max = 500  # identifiers (EPCs, classes, parent) indexed for one event
trace_context_bytes_max = 4 * 1024  # a document's @context, carried with its events for the hash
trace_depth_max = 32  # nesting of arrays/objects in an EPCIS document, event or @context, and of XML elements
dg_ciphertext_b64_max = 16 * 1024  # a sealed dangerous-goods declaration, base64 (its JSON is a few hundred bytes)
dg_terminals_max = 8  # terminals named in one declaration
dg_readers_max = dg_terminals_max + 2  # wraps of a declaration's data key: shipper, carrier and the terminals
dg_reason_chars_max = 500  # a carrier's reason for rejecting, sealed for shipper and carrier
dg_reason_b64_max = 4 * ((dg_reason_chars_max * 4 + 16 + 2) // 3)  # that reason as UTF-8 + GCM tag, base64
capture_document_bytes_max = 32 * 1024 * 1024  # GS1-EPCIS-Capture-File-Size-Limit
capture_events_max = 100_000  # GS1-EPCIS-Capture-Limit: events in one capture document
capture_jobs_max = 10_000  # capture jobs a node remembers (oldest finished ones are forgotten first)
query_per_page_max = 1000  # events in one EPCIS query page
query_scan_max = 200_000  # index entries one query page may read before it answers with what it found
provenance_events_max = 5_000  # events in one item's provenance
provenance_ids_max = 2_000  # identifiers (containers, inputs) one provenance walk follows

# The payments core (liangcao.payments).
pay_batch_events_max = 8190  # events in one create_accounts / create_transfers batch (TigerBeetle's figure)
pay_lookup_ids_max = 8190  # ids in one lookup
pay_query_limit_max = 8190  # transfers or balances one account query returns
pay_batch_bytes_max = 8 * 1024 * 1024  # one batch as JSON on the wire and in the log
pay_timeout_s_max = 2**32 - 1  # a pending transfer's timeout, seconds (u32)
pay_http_body_bytes_max = 16 * 1024 * 1024  # one HTTP request to the payments service


def _check() -> None:
    if not (args_depth_max < value_depth_max):
        raise AssertionError("args must nest less deeply than any value")
    if not (money_fen_max * 1000 < int_max):
        raise AssertionError("sums of a thousand amounts of money must fit in a signed 64-bit integer")
    if not (value_bytes_max < tx_bytes_max):
        raise AssertionError("a value must fit in a transaction")
    if not (block_txs_max * 64 <= block_bytes_max):
        raise AssertionError("a full block of small transactions must fit in block_bytes_max")
    if not (mempool_txs_max >= block_txs_max):
        raise AssertionError("the mempool must hold at least one full block")
    if not (mempool_bytes_max >= 2 * block_bytes_max and mempool_bytes_max >= batch_bytes_max):
        raise AssertionError("the mempool's bytes must hold two full blocks and a full batch")
    if not (batch_txs_max <= mempool_txs_max and batch_bytes_max >= batch_txs_max * 64):
        raise AssertionError("a full batch must fit in the mempool and in batch_bytes_max")
    if not (trace_event_bytes_max + trace_context_bytes_max + 1024 <= value_bytes_max):
        raise AssertionError("an anchored event record (event, context, metadata) must fit in one value")
    if not (trace_ids_per_event_max + 8 <= writes_per_tx_max):
        raise AssertionError("the writes of one event at its largest must fit in one transaction")
    if not (2 * voucher_leaves_max - 1 <= tree_nodes_max and split_children_max <= voucher_leaves_max):
        raise AssertionError("a root voucher's whole split tree must fit in tree_nodes_max")
    if not (split_children_max <= 99 and voucher_leaves_max + pool_assets_max < range_results_max):
        raise AssertionError("a part's index is two digits; a tree's leaves and a pool's assets fit in one range")
    if not (
        2 * max(settle_page_max, sweep_page_max) + 1 <= events_per_tx_max and settle_page_max * 8 <= writes_per_tx_max
    ):
        raise AssertionError(
            "a page of settlement (two events and up to eight writes a leaf) must fit in one transaction"
        )
    if not (scf_page_max <= range_results_max):
        raise AssertionError("an SCF read-model page must fit in one range")
    if not (pay_batch_events_max * 540 <= pay_batch_bytes_max):
        raise AssertionError("a full payments batch of large transfers must fit in pay_batch_bytes_max")
    if not (pay_batch_bytes_max <= pay_http_body_bytes_max):
        raise AssertionError("a full payments batch must fit in one HTTP request")


_check()
