"""The command line: help without heavy imports, exit codes, --json, --set, --verbose."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dlpipe import __version__
from dlpipe.cli.app import app
from tests.conftest import REPO, Workspace, tree_digest

HEAVY = ("tensorflow", "keras", "librosa", "faiss", "umap", "gensim", "sklearn", "matplotlib", "soundfile", "numba")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dlpipe {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["ingest", "--help"],
        ["sample", "--help"],
        ["finetune", "--help"],
        ["predict", "--help"],
        ["cluster", "--help"],
        ["heatmap", "--help"],
        ["search", "query", "--help"],
    ],
)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    code = f"import sys; from dlpipe.cli.app import app; app({argv!r}, prog_name='dlpipe', standalone_mode=False)"
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in completed.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), f"--help imported {sorted(imported & set(HEAVY))}"
    assert "--params" in completed.stdout or argv == ["--help"]


def test_every_command_has_the_common_options(runner: CliRunner) -> None:
    for command in ("sample", "ingest", "finetune", "embed", "predict", "cluster", "search build", "search query", "heatmap", "metrics"):
        text = runner.invoke(app, [*command.split(), "--help"], terminal_width=200).output
        for option in ("--params", "--set", "--verbose", "--json"):
            assert option in text, f"{command} lacks {option}"


def test_ingest_json_output_and_outputs(runner: CliRunner, workspace: Workspace) -> None:
    source = workspace.image_dataset()
    before = tree_digest(source)
    result = runner.invoke(app, ["ingest", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert (report["dataset"], report["accepted"], report["classes"]) == ("imgs", 12, {"cat": 6, "dog": 6})
    assert (workspace.root / "data/imgs/ingest/manifest.csv").is_file()
    assert tree_digest(source) == before


def test_config_error_exit_code_and_message(runner: CliRunner, workspace: Workspace) -> None:
    workspace.image_dataset()
    result = runner.invoke(app, ["ingest", "--set", "ingest.val_fraction=fast"])
    assert result.exit_code == 3
    assert "ingest.val_fraction: Input should be a valid number, got 'fast'" in result.stderr
    assert "Traceback" not in result.output
    assert not (workspace.root / "data").exists()


def test_input_error_exit_code_and_verbose_traceback(runner: CliRunner, workspace: Workspace) -> None:
    workspace.add_dataset("imgs", "image", "src/missing")
    quiet = runner.invoke(app, ["ingest"])
    assert quiet.exit_code == 4 and "source not found" in quiet.stderr and "Traceback" not in quiet.stderr
    loud = runner.invoke(app, ["ingest", "--verbose"])
    assert loud.exit_code == 4 and "Traceback" in loud.stderr


def test_unknown_dataset_is_a_config_error(runner: CliRunner, workspace: Workspace) -> None:
    workspace.image_dataset()
    result = runner.invoke(app, ["ingest", "--dataset", "nope"])
    assert result.exit_code == 3 and "datasets.nope" in result.stderr


def test_usage_error_is_exit_code_2(runner: CliRunner) -> None:
    assert runner.invoke(app, ["ingest", "--no-such-option"]).exit_code == 2
    assert runner.invoke(app, ["sample", "pictures", "out"]).exit_code == 2


def test_missing_params_file(runner: CliRunner, workspace: Workspace) -> None:
    result = runner.invoke(app, ["ingest", "--params", "elsewhere.yaml"])
    assert result.exit_code == 3 and "params file not found: elsewhere.yaml" in result.stderr


def test_sample_then_ingest_through_the_cli(runner: CliRunner, workspace: Workspace) -> None:
    workspace.params["sample"]["images"].update(per_class=5, size=48)
    workspace.add_dataset("imgs", "image", "samples/shapes")
    made = runner.invoke(app, ["sample", "images", "samples/shapes", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["classes"] == {"circle": 5, "square": 5, "triangle": 5, "star": 5}
    ingested = runner.invoke(app, ["ingest", "--dataset", "imgs", "--json"])
    assert ingested.exit_code == 0, ingested.output
    (report,) = json.loads(ingested.stdout)
    assert report["accepted"] == 20 and report["rejected_by_reason"] == {"outside_class_folder": 1}


def test_image_commands_through_the_cli(runner: CliRunner, workspace: Workspace, tmp_path) -> None:
    """finetune -> embed -> predict on tiny data, each with --json."""
    from tests.unit.test_image_models import TINY, tiny_shapes

    tiny_shapes(workspace)
    overrides = [arg for override in TINY for arg in ("--set", override)]
    trained = runner.invoke(app, ["finetune", "--dataset", "shapes", "--json", *overrides])
    assert trained.exit_code == 0, trained.output
    (report,) = json.loads(trained.stdout)
    assert report["epochs"] == 3 and report["model_dir"].endswith("data/shapes/model")

    embedded = runner.invoke(app, ["embed", "--json", *overrides])
    assert embedded.exit_code == 0, embedded.output
    (report,) = json.loads(embedded.stdout)
    assert (report["count"], report["source"]) == (32, "finetuned")

    image = sorted((workspace.root / "shapes/star").iterdir())[0]
    predicted = runner.invoke(app, ["predict", str(image), "-k", "2", "--json"])
    assert predicted.exit_code == 0, predicted.output
    (answer,) = json.loads(predicted.stdout)
    assert answer["path"] == str(image) and len(answer["top"]) == 2

    missing = runner.invoke(app, ["predict", str(image), "--model", str(tmp_path / "nowhere")])
    assert missing.exit_code == 5 and "model not found" in missing.stderr

    summary = runner.invoke(app, ["metrics", "--json"])
    stages = {(row["dataset"], row["stage"]) for row in json.loads(summary.stdout)}
    assert stages == {("shapes", "ingest"), ("shapes", "finetune"), ("shapes", "embed")}
