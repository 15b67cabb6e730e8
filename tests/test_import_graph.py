"""The packages inside ``gateway`` import each other without cycles (scripts/import_graph.py),
and the shared pieces depend on no feature.

The last cycle (accounts <-> auth <-> settings <-> store) went when the pure types both sides
used (tier limits, account statuses, roles, the key format) moved to ``gateway/domain``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    path = ROOT / "scripts" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", module)
    spec.loader.exec_module(module)
    return module


def test_no_package_cycles() -> None:
    graph = _script()
    assert graph.cycles(graph.edges(ROOT)) == [], "import cycles between gateway packages"


def test_the_watermark_the_model_server_and_the_proxy_side_are_layered() -> None:
    edges = _script().edges(ROOT)
    # the model side never imports the server that runs it, nor the proxy's logprob defences
    assert {"modelserver", "logprobs", "proxy", "vllm"}.isdisjoint(edges["watermark"])
    # the shared pieces depend on no feature package
    assert edges["tokenizer"] == set()
    assert edges["domain"] == set()
    assert edges["upstream_identity"] <= {"settings"}
    assert "proxy" not in edges["vllm"]


def test_the_cycle_finder_finds_cycles() -> None:
    graph = _script()
    assert graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert graph.cycles({"a": {"b"}, "b": set()}) == []
