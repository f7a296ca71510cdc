"""Every bound of the risk engine, named once (units last). Checked against each other at import."""

from __future__ import annotations

# Input.
id_chars_max = 128  # payment, shopper, device, account, merchant ids; category names
amount_fen_max = 10**12  # one payment: ten billion yuan
clock_skew_ms_max = 10 * 60 * 1000  # a payment's time_ms may differ this much from the engine's clock
payment_bytes_max = 8 * 1024  # one payment as JSON

# State kept in memory (each table evicts its least recently seen entry when full).
shoppers_max = 200_000
devices_max = 200_000
ip_prefixes_max = 100_000
accounts_max = 200_000
merchants_max = 50_000
devices_per_shopper_max = 8
payees_per_shopper_max = 32
places_per_shopper_max = 8
shoppers_per_key_max = 32  # distinct shoppers remembered per device / IP prefix / account
pending_max = 500_000  # decided payments kept for their labels (and features to learn from)
label_queue_max = 200_000  # labels waiting to be learned; beyond this the oldest are learned inline

# Rules.
rules_max = 500
conditions_per_rule_max = 16
condition_values_max = 1000  # values in one `in` / `not_in` list
rules_bytes_max = 256 * 1024
rule_versions_max = 10_000

# Models.
model_versions_max = 2_000  # kept in the home folder; older versions are deleted (rollback beyond: refused)
compare_window_max = 20_000  # labelled events on which champion and challenger are compared

if not (0 < devices_per_shopper_max <= 64 and 0 < payees_per_shopper_max <= 256):
    raise ValueError("risk limits: per-shopper sets must stay small (they are scanned on every payment)")
if not (label_queue_max <= pending_max):
    raise ValueError("risk limits: the label queue cannot hold more than the pending payments")
