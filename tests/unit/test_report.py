"""The HTML report: what each page holds, the index, its errors, and the pages in a real browser.

One tiny project runs every stage of images (shapes), the spectrogram of audio (clips) and
word2vec on a corpus (words); a fourth dataset (later) has no outputs yet.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dlpipe.core.artifacts import numbers_only
from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.stages import cluster, embed, finetune, heatmap, report, search, spectrogram, word2vec
from tests.conftest import Workspace
from tests.unit.test_interruptions import SMALL, every_modality

REPO = Path(__file__).resolve().parents[2]
# Where the browser test keeps its screenshots for people to look at (not in git).
ARTIFACTS = Path(os.environ.get("DLPIPE_TEST_ARTIFACTS", REPO / "test-artifacts"))
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(""", re.IGNORECASE)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Every stage run on tiny images, a spectrogram of clips, word2vec on a corpus; then `report` on all."""
    workspace = Workspace(tmp_path_factory.mktemp("report"))
    project = every_modality(workspace)
    for module in (finetune, embed, cluster, search, heatmap):
        module.run(project, "shapes")
    spectrogram.run(project, "clips")
    word2vec.run(project, "words")
    workspace.add_dataset("later", "image", "shapes")
    report.run_all(workspace.load(*SMALL))
    return workspace


def page_of(workspace: Workspace, dataset: str) -> str:
    return (workspace.root / "data/report/datasets" / dataset / "index.html").read_text(encoding="utf-8")


def overview_pictures(data: Path) -> list[Path]:
    """The pictures a page must show: each stage folder's own, the contact sheets and the plots (not per-item ones)."""
    folders = [data / name for name in ("spectrogram", "model", "cluster", "cluster/sheets", "search", "heatmap", "word2vec")]
    folders += sorted(path for path in (data / "plots").glob("*") if path.is_dir())
    return [path for folder in folders for path in sorted(folder.glob("*.png"))]


def test_a_page_embeds_every_overview_picture_its_figures_and_its_record(reported: Workspace) -> None:
    data = reported.root / "data/shapes"
    html = page_of(reported, "shapes")
    pictures = overview_pictures(data)
    assert len(pictures) >= 8  # confusion, history, top losses, umap, silhouette, sheets, examples, grid
    assert html.count("<img ") == len(pictures)
    for path in pictures:
        assert base64.b64encode(path.read_bytes()).decode() in html, path
    assert not EXTERNAL.search(html), "the page must not fetch anything"
    finetune_metrics = json.loads((data / "metrics/finetune.json").read_text())
    assert f"<td class=\"num\">{finetune_metrics['test_accuracy']:.4g}</td>" in html
    index = json.loads((data / "search/index.json").read_text())
    assert f"Index {index['factory']} ({index['metric']}, held in {index['storage']})" in html
    assert index["reason"] in html
    model = json.loads((data / "model/model.json").read_text())
    assert f"<td>params.head_epochs</td><td class=\"num\">{model['params']['head_epochs']}</td>" in html
    for digest in (model["manifest_sha256"], model["model_sha256"], index["embeddings_sha256"]):
        assert digest in html  # the provenance table
    for stage in ("ingest", "finetune", "embed", "cluster", "search", "heatmap"):
        assert f'<section id="{stage}">' in html


def test_metrics_files_hold_numbers_only_and_the_words_are_in_the_records(reported: Workspace) -> None:
    files = sorted((reported.root / "data").glob("*/metrics/*.json"))
    assert len(files) >= 10
    for path in files:
        metrics = json.loads(path.read_text())
        assert numbers_only(metrics) == metrics, path
        assert "dataset" not in metrics
    record = json.loads((reported.root / "data/shapes/cluster/cluster.json").read_text())
    assert record["k_reason"] in page_of(reported, "shapes")  # the report's cluster callout reads it there


def test_audio_and_corpus_pages_show_their_own_stages(reported: Workspace) -> None:
    clips = page_of(reported, "clips")
    means = reported.root / "data/clips/spectrogram/class_means.png"
    assert base64.b64encode(means.read_bytes()).decode() in clips
    words = page_of(reported, "words")
    metrics = json.loads((reported.root / "data/words/metrics/word2vec.json").read_text())
    assert '<section id="word2vec">' in words
    assert f"<td>vocabulary</td><td class=\"num\">{metrics['vocabulary']:,}</td>" in words
    summary = json.loads((reported.root / "data/report/datasets/words/summary.json").read_text())
    assert summary["task"] == "corpus" and list(summary["stages"]) == ["ingest", "word2vec"]


def test_the_index_links_every_page_and_names_the_dataset_without_one(reported: Workspace) -> None:
    root = reported.root / "data/report"
    html = (root / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="([^"#]+)"', html)
    assert sorted(links) == [f"datasets/{name}/index.html" for name in ("clips", "shapes", "words")]
    assert all((root / link).is_file() for link in links)
    assert re.search(r"<td>later</td>.*no page yet", html)
    assert not (root / "datasets/later").exists()


def test_nothing_to_report_is_exit_4_and_a_damaged_artifact_exit_5_leaving_the_page(reported: Workspace) -> None:
    project = reported.load(*SMALL)
    with pytest.raises(InputDataError, match="'later' has no outputs") as caught:
        report.run(project, "later")
    assert caught.value.exit_code == 4
    page = reported.root / "data/report/datasets/shapes/index.html"
    before = page.read_bytes()
    metrics = reported.root / "data/shapes/metrics/cluster.json"
    saved = metrics.read_bytes()
    stray = reported.root / "data/shapes/cluster/notes.png"
    try:
        metrics.write_text("[1, 2", encoding="utf-8")
        with pytest.raises(ArtifactError, match="metrics of stage 'cluster'") as caught:
            report.run(project, "shapes")
        assert caught.value.exit_code == 5
        metrics.write_bytes(saved)
        stray.write_text("not a picture", encoding="utf-8")
        with pytest.raises(ArtifactError, match="notes.png is not a PNG"):
            report.run(project, "shapes")
    finally:
        metrics.write_bytes(saved)
        stray.unlink(missing_ok=True)
    assert page.read_bytes() == before
    assert not [path for path in page.parents[1].iterdir() if ".partial-" in path.name]


def test_the_cli_writes_a_page_and_says_where_the_index_is(reported: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dlpipe.cli.app import app

    monkeypatch.chdir(reported.root)
    overrides = [word for item in SMALL for word in ("--set", item)]
    done = CliRunner().invoke(app, ["report", "--dataset", "clips", "--json", *overrides])
    assert done.exit_code == 0, done.output
    page = reported.root / "data/report/datasets/clips/index.html"
    assert json.loads(done.stdout) == [{"dataset": "clips", "page": str(page), "stages": ["ingest", "spectrogram"]}]
    where = CliRunner().invoke(app, ["report", "--where"])
    assert where.stdout.strip() == str(reported.root / "data/report/index.html")
    unknown = CliRunner().invoke(app, ["report", "--dataset", "nope"])
    assert unknown.exit_code == 3


def chromium() -> str:
    """Debian's Chromium: found, or installed with apt-get where this runs as root; else the test is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("Chromium is not installed, and apt-get cannot install it here (no apt-get, or not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, timeout=900, env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"Chromium could not be installed from Debian's packages: {exc}")
    return shutil.which("chromium") or pytest.skip("apt-get installed chromium, but no chromium command appeared")


def test_every_page_loads_every_image_without_a_console_error_in_chromium(reported: Workspace) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    executable = chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    root = reported.root / "data/report"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
            page.goto((root / "index.html").as_uri())
            page.screenshot(path=str(ARTIFACTS / "report-index.png"))
            for dataset in ("shapes", "clips", "words"):
                page.goto((root / "index.html").as_uri())
                page.click(f"a:text-is('{dataset}')")  # the index's link, as a person would follow it
                page.wait_for_load_state("load")
                assert page.url.endswith(f"datasets/{dataset}/index.html")
                loaded = page.evaluate("Array.from(document.images).map(img => img.complete && img.naturalWidth > 0)")
                assert loaded == [True] * page_of(reported, dataset).count("<img "), dataset
                if dataset == "shapes":
                    assert len(loaded) >= 8
                    page.screenshot(path=str(ARTIFACTS / "report-shapes.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert (ARTIFACTS / "report-shapes.png").stat().st_size > 10_000
