"""``dlpipe doctor``: it reports missing weights, a running stage's lock and a killed run's leftovers (exit 8)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dlpipe.cli.app import app
from dlpipe.core.artifacts import stage_lock
from dlpipe.core.errors import EXIT_CODES
from tests.conftest import Workspace


def doctor(workspace: Workspace) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["doctor", "--json", "--params", str(workspace.params_path)])
    return result.exit_code, json.loads(result.stdout)


def test_a_healthy_project_has_no_problem(workspace: Workspace) -> None:
    workspace.image_dataset()
    code, report = doctor(workspace)
    assert code == 0 and report["problems"] == 0, report
    assert report["versions"]["tensorflow"] != "not installed"
    checks = {finding["check"] for finding in report["findings"]}
    assert {"gpu", "weights", "space", "pipeline"} <= checks


def test_missing_imagenet_weights_are_a_problem_naming_the_file(workspace: Workspace, keras_home: Path) -> None:
    workspace.image_dataset()
    workspace.params["finetune"]["backbone"] = {"name": "mobilenet", "weights": "imagenet", "alpha": 0.25, "image_size": 128}
    workspace.write_params()
    code, report = doctor(workspace)
    assert code == 8 and "doctor" in EXIT_CODES[8]
    (weights,) = [finding for finding in report["findings"] if finding["check"] == "weights"]
    assert not weights["ok"] and "mobilenet_2_5_128_tf_no_top.h5" in weights["detail"] and str(keras_home) in weights["detail"]
    assert weights["hint"].startswith("copy mobilenet_2_5_128_tf_no_top.h5 into")


def test_a_running_stage_and_a_killed_runs_leftovers_are_problems(workspace: Workspace) -> None:
    workspace.image_dataset()
    layout = workspace.load().layout("imgs")
    (layout.root / ".embed.partial-k1ll3d").mkdir(parents=True)
    with stage_lock(layout.root, "ingest"):
        code, report = doctor(workspace)
    assert code == 8 and report["problems"] == 2
    problems = {finding["check"]: finding for finding in report["findings"] if not finding["ok"]}
    assert "stage 'ingest' of dataset 'imgs' is running now" in problems["lock"]["detail"]
    assert ".embed.partial-k1ll3d was left by a run that was killed" in problems["leftover"]["detail"]
    # Once the run is over, its lock file alone is no problem.
    assert doctor(workspace)[1]["problems"] == 1
