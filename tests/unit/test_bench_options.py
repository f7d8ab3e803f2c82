"""``bench/baselines.py --imgmod`` runs ``bench/throughput.py``'s job: every option that job
reads must reach it (a hand-built option list once lacked one, and the run died after the
user script's minutes, its figures lost)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_on_path() -> object:
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def _options_read(source: Path) -> set[str]:
    """Every ``args.<name>`` the module reads."""
    tree = ast.parse(source.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "args"
    }


def test_the_imgmod_side_gets_every_option_throughput_reads(bench_on_path: object) -> None:
    import baselines

    args = baselines.arguments().parse_args(["--n-script", "1200", "--latency-ms", "1000"])
    options = baselines.imgmod_options(args)
    read = _options_read(BENCH / "throughput.py")
    assert {"n", "qps", "ids_per_message", "latency_ms"} <= read  # the walk finds them
    assert read - set(vars(options)) == set()
    assert (options.n, options.qps, options.db, options.latency_ms) == (1200, 100.0, "sqlite", 1000)
