"""bench/gpu_check.py: its comparison on real CPU runs, and its refusal where FAISS sees no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from dlpipe.retrieval import index as ix  # noqa: E402

import gpu_check  # noqa: E402  (bench/ is not a package: its scripts import each other by name)
from bench_search import make_data  # noqa: E402


@pytest.fixture(scope="module")
def cpu_runs() -> tuple[dict, dict]:
    """Two CPU runs of the check's side on small benchmark data: what a GPU run is compared like."""
    vectors, queries = make_data("clustered", 6000, 100, 16, seed=0)
    _, true_ids = ix.build_index(vectors, "Flat").search(queries, gpu_check.K)
    params = {"nprobe": 16}
    first, second = (
        gpu_check.run_side(vectors, queries, true_ids, "IVF64,SQfp16", params, 32, seed, use_gpu=False)
        for seed in (0, 1)
    )
    return first, second


def test_two_cpu_runs_agree_on_every_check(cpu_runs: tuple[dict, dict]) -> None:
    first, second = cpu_runs
    assert first["exact_recall_at_10"] == 1.0  # CPU Flat is the ground truth itself
    assert first["recall_at_10"] > 0.9  # measured 0.969 (seed 0) and 0.967 (seed 1)
    # another seed trains other lists and centroids: within the tolerances a GPU run must meet
    assert gpu_check.agreement(first, second) == dict.fromkeys(("index_recall", "exact_search", "kmeans_inertia"), True)


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"recall_at_10": -0.02}, "index_recall"),
        ({"exact_recall_at_10": -0.002}, "exact_search"),
        ({"kmeans_inertia": "x1.02"}, "kmeans_inertia"),
    ],
)
def test_agreement_flags_each_disagreement(cpu_runs: tuple[dict, dict], change: dict, failed: str) -> None:
    first, _ = cpu_runs
    other = dict(first)
    for key, delta in change.items():
        other[key] = first[key] * 1.02 if delta == "x1.02" else first[key] + delta
    verdict = gpu_check.agreement(first, other)
    assert [name for name, ok in verdict.items() if not ok] == [failed]


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is present")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--count", "2000", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == gpu_check.NO_GPU_EXIT
    assert "sees no GPU" in done.stderr and "pip install '.[gpu]'" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written that could pass for a result


def test_report_puts_both_sides_and_the_verdict_side_by_side(cpu_runs: tuple[dict, dict]) -> None:
    first, second = cpu_runs
    result = {"count": 6000, "dimension": 16, "queries": 100, "clusters": 32, "factory": "IVF64,SQfp16"}
    result |= {"search_params": {"nprobe": 16}, "cpu": first, "gpu": second, "agreement": gpu_check.agreement(first, second)}
    text = gpu_check.report(result)
    assert "index IVF64,SQfp16 at nprobe=16, k-means k=32" in text
    recall_line = next(line for line in text.splitlines() if line.startswith("index recall@10"))
    assert recall_line.split()[-2:] == [f"{first['recall_at_10']:.4f}", f"{second['recall_at_10']:.4f}"]
    assert text.endswith("kmeans_inertia: agrees")
