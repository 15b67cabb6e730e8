"""A declared workload: what the operator stored, read back or refused, and what it withholds."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.domain.workloads import MAX_ALLOWANCE, Workload, withholds


def test_a_declaration_round_trips_through_its_stored_form() -> None:
    workload = Workload("evaluation", 250)
    assert Workload.from_json(workload.to_json()) == workload


@pytest.mark.parametrize("stored", [
    None, [], "evaluation", 250,
    {"kind": "evaluation"}, {"allowance": 250},
    {"kind": "chat", "allowance": 250}, {"kind": "", "allowance": 250},
    {"kind": "evaluation", "allowance": 0}, {"kind": "evaluation", "allowance": -5},
    {"kind": "evaluation", "allowance": MAX_ALLOWANCE + 1},
    {"kind": "evaluation", "allowance": True},  # a bool is an int to Python, not to us
    {"kind": "evaluation", "allowance": 250.0}, {"kind": "evaluation", "allowance": "250"},
    {"kind": ["evaluation"], "allowance": 250},
])
def test_anything_malformed_reads_as_no_declaration(stored: Any) -> None:
    assert Workload.from_json(stored) is None


def test_it_withholds_up_to_and_including_its_allowance_and_never_past_it() -> None:
    workload = Workload("evaluation", 120)
    assert withholds(workload, 0) and withholds(workload, 120)
    assert not withholds(workload, 121)
    assert not withholds(None, 0)  # no declaration: every verdict stands
