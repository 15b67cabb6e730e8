"""Cohort keys: one watermark identity for every account of a flagged campaign.

Measured (``bench/watermark/suspect_results.txt``): a student that generalises — a small
transformer trained from scratch — carries one harvester's key strongly enough to attribute
(corrected p 1e-9.5 among 10,000 accounts after 16 queries), but a campaign of ten accounts,
each served under its own key, leaves nothing testable: every context occurs in every member's
text, each member's green list tilts it a different way, and a smooth student learns the
average, which is flat (green 0.2507 against a null of 0.25, with 573k harvested tokens). No
test of the suspect recovers a mark the student never learned, so the gateway changes what it
serves instead: once the detector has flagged a campaign, its accounts are watermarked under one
identity, ``cohort:<flag id>``, and what they harvest from then on carries one key, as a
single harvester's would. The identity is derived exactly like an account's
(:func:`gateway.watermark.keys.derive_key`), so the model server, vLLM's processor, the text
detector and ``gateway suspect`` need nothing new; a cohort is a candidate like an account.
Nothing a client sees changes when its key does.
"""

from __future__ import annotations

COHORT_PREFIX = "cohort:"


def cohort_identity(flag_id: str) -> str:
    """The watermark identity of the campaign flagged as ``flag_id``."""
    return COHORT_PREFIX + flag_id


def is_cohort(identity: str) -> bool:
    return identity.startswith(COHORT_PREFIX)
