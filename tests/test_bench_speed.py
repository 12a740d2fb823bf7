"""`benchmarks/bench_speed.py --smoke`: the speed benchmark runs end to end on tiny models and reports honestly.

Only the report's shape and the map-agreement check are tested; timings are only checked to fit within the test's own
wall clock around the run (they are measurements, recorded in benchmarks/README.md, not tests).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_a_complete_report(bench, tmp_path, capsys):
    path = tmp_path / "speed.json"
    start = time.perf_counter()
    bench.main(["--smoke", "--json", str(path)])
    wall_ms = 1000 * (time.perf_counter() - start)
    report = json.loads(path.read_text())
    table = capsys.readouterr().out
    assert report["machine"]["cpu"] and report["machine"]["torch_threads"] == 1
    assert "RSS" in report["memory_method"]
    results = report["results"]
    assert {r["model"] for r in results} == {"smoke-clip", "smoke-siglip", "smoke-vit"}
    assert {(r["prompts"], r["layers"]) for r in results} == {(1, "last2"), (1, "all"), (3, "last2"), (3, "all")}
    for record in results:
        assert set(record["median_ms"]) == set(bench.METHODS)
        assert all(len(times) == report["repeats"] for times in record["times_ms"].values())
        assert record["maps_agree"] is True
        assert 0 <= record["map_check"]["max_abs_diff"] <= record["map_check"]["tolerance"]
        expected_floor = record["median_ms"]["forward"] * (
            1 + bench.BACKWARD_FRACTION * record["prompts"] * record["explained_layers"] / record["num_layers"]
        )
        assert record["floor_ms"] == pytest.approx(expected_floor)
        ratios = record["ratios"]
        assert ratios["straightforward_over_ours"] == pytest.approx(
            record["median_ms"]["straightforward"] / record["median_ms"]["ours"]
        )
        assert set(ratios) >= {"ours_over_forward", "ours_over_floor"}
        assert all(value >= 0 for value in record["peak_memory_mb"].values())
        assert record["explained_layers"] == (2 if record["layers"] == "last2" else record["num_layers"])
    assert table.count("| smoke-") == len(results)
    # The timed repeats of every method and record ran within the test's own wall clock around the benchmark.
    times = [t for record in results for repeats in record["times_ms"].values() for t in repeats]
    assert min(times) > 0 and sum(times) <= wall_ms, (sum(times), wall_ms)


def test_disagreeing_maps_stop_the_benchmark(bench, monkeypatch):
    original = bench.straightforward_grid_maps

    def transposed(*args, **kwargs):
        return original(*args, **kwargs).transpose(-1, -2).flip(-1)

    monkeypatch.setattr(bench, "straightforward_grid_maps", transposed)
    with pytest.raises(AssertionError, match="disagree"):
        bench.main(["--smoke", "--models", "smoke-clip", "--prompts", "2", "--layers", "last2"])
