"""The package's layers: import directions, no private imports, and dvc.yaml deps that cover every stage's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from dlpipe.stages import stage_module
from tests.conftest import REPO

PACKAGE = REPO / "dlpipe"


def _module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` for every dlpipe import in a file, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("dlpipe"):
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("dlpipe")]
    return found


def _reached(path: Path) -> set[str]:
    """The dlpipe modules one file's imports load, packages on the way included."""
    modules = set()
    for module, names in _imports(path):
        targets = [module] + [f"{module}.{name}" for name in names if _module_file(f"{module}.{name}")]
        for target in targets:
            parts = target.split(".")
            modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {module for module in modules if _module_file(module)}


def import_closure(module: str) -> set[Path]:
    """Every dlpipe source file importing ``module`` runs, from its ``import`` statements."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_reached(_module_file(current)))
    return {_module_file(name) for name in seen}


def _covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def _stage_deps() -> dict[str, tuple[str, list[str]]]:
    """dvc.yaml stage name -> (the dlpipe stage module its cmd runs, its code deps)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    found = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()[1]  # dlpipe <command> ...: each command runs the stage module of its name
        # ... or, in a `<command>_text` stage (labelled text datasets), its text variant.
        modality = "text" if name == f"{command}_text" else "image"
        found[name] = (stage_module(command, modality), [dep for dep in body["deps"] if dep.startswith("dlpipe")])
    return found


STAGE_DEPS = _stage_deps()


@pytest.mark.parametrize("stage", sorted(STAGE_DEPS))
def test_stage_deps_cover_its_import_closure(stage: str) -> None:
    module, deps = STAGE_DEPS[stage]
    missing = sorted(p.relative_to(REPO).as_posix() for p in import_closure(module) if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage} runs {module} but its deps miss {missing}"


@pytest.mark.parametrize(("stage", "text_only"), [("finetune", {"text"}), ("heatmap", {"word_span"})])
def test_image_stages_declare_every_key_of_their_section_but_the_text_ones(stage: str, text_only: set[str]) -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    image = {p for p in stages[stage]["do"]["params"] if p.startswith(f"{stage}.")}
    text = {p for p in stages[f"{stage}_text"]["do"]["params"] if p.startswith(f"{stage}.")}
    every = {f"{stage}.{key}" for key in params[stage]}
    assert image == every - {f"{stage}.{key}" for key in text_only}, sorted(every - image)
    assert {f"{stage}.{key}" for key in text_only} <= text <= every


def test_closure_check_fails_when_a_folder_is_removed_from_deps() -> None:
    module, deps = STAGE_DEPS["finetune"]
    without_models = [dep for dep in deps if dep != "dlpipe/models"]
    missing = [p for p in import_closure(module) if not _covered(p, without_models)]
    assert {PACKAGE / "models" / name for name in ("network.py", "training.py", "heads/classification.py")} <= set(missing)


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def _all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_core_imports_nothing_else_of_dlpipe() -> None:
    bad = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in _all_modules()
        if _layer(path) == "core"
        for module, _ in _imports(path)
        if not module.startswith("dlpipe.core")
    ]
    assert not bad, bad


def test_only_cli_imports_stages_and_queries_and_they_never_import_each_other() -> None:
    bad = []
    for path in _all_modules():
        layer = _layer(path)
        for module in {module for module, _ in _imports(path)} | _reached(path):
            target = module.split(".")[1] if module.count(".") >= 1 else ""
            if target not in ("stages", "queries") or module in ("dlpipe.stages", "dlpipe.queries"):
                continue
            if layer == "cli":
                continue
            if layer == target and target == "stages":
                bad.append(f"{path.relative_to(REPO)} imports another stage, {module}")
            elif layer == target:
                bad.append(f"{path.relative_to(REPO)} imports another query, {module}")
            else:
                bad.append(f"{path.relative_to(REPO)} ({layer or 'top level'}) imports {module}")
    assert not bad, bad


def test_lower_layers_never_import_the_cli() -> None:
    bad = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in _all_modules()
        if _layer(path) != "cli"
        for module, _ in _imports(path)
        if module.startswith("dlpipe.cli")
    ]
    assert not bad, bad


@pytest.mark.parametrize("folder", ["dlpipe", "tests", "bench"])
def test_no_module_imports_a_private_name_of_another(folder: str) -> None:
    bad = [
        f"{path.relative_to(REPO)}: from {module} import {name}"
        for path in sorted((REPO / folder).rglob("*.py"))
        for module, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not bad, bad


def _module_aliases(tree: ast.Module) -> set[str]:
    """Names a file binds to dlpipe modules (``from dlpipe.stages import embed``, ``import dlpipe.x as y``)."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlpipe"):
            for alias in node.names:
                if _module_file(f"{node.module}.{alias.name}") is not None:
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases.update(alias.asname for alias in node.names if alias.name.startswith("dlpipe") and alias.asname)
    return aliases


@pytest.mark.parametrize("folder", ["tests", "bench"])
def test_tests_and_benchmarks_use_no_private_name_of_a_dlpipe_module(folder: str) -> None:
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _module_aliases(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, bad


def _placeholder_outputs(project: Path) -> None:
    """Stand-ins for every stage's sources and outputs, so ``dvc commit`` can record a lock without running a stage."""
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    datasets = {name: spec for kind in params["datasets"].values() for name, spec in kind.items()}
    paths = [spec["source"] for spec in datasets.values()]
    for name in datasets:
        for stage in ("ingest", "spectrogram", "model", "finetune", "embed", "cluster", "search", "heatmap", "word2vec"):
            paths.append(f"data/{name}/{stage}")
            paths.append(f"data/{name}/metrics/{stage}.json")
        paths += [f"data/{name}/plots/finetune", f"data/{name}/plots/word2vec", f"data/report/datasets/{name}"]
    paths.append("data/report/index.html")
    paths += [f"data/sample/{folder}" for folder in ("shapes", "sounds", "news", "reviews")]
    for relative in paths:
        path = project / relative
        if path.suffix in (".json", ".cor", ".html"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder.txt").write_text(relative)
    for name in datasets:  # what the image stages' deps name inside those folders
        for folder in ("ingest", "spectrogram"):
            (project / f"data/{name}/{folder}/manifest.csv").write_text("path\n")


@pytest.mark.integration
def test_dvc_status_reports_the_stages_that_import_an_edited_module(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    project = tmp_path / "project"
    shutil.copytree(PACKAGE, project / "dlpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    dvc = [sys.executable, "-m", "dvc"]

    def run(*args: str) -> str:
        return subprocess.run([*args], cwd=project, capture_output=True, text=True, check=True).stdout

    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run(*dvc, "config", "core.analytics", "false")
    _placeholder_outputs(project)
    run(*dvc, "commit", "--force", "-q")
    assert "up to date" in run(*dvc, "status").lower() or run(*dvc, "status", "--json").strip() in ("{}", "")

    # Python writes bytecode beside the code it runs: that must not look like a change.
    (project / "dlpipe" / "core" / "__pycache__").mkdir()
    (project / "dlpipe" / "core" / "__pycache__" / "layout.cpython-311.pyc").write_bytes(b"\0")
    assert run(*dvc, "status", "--json").strip() in ("{}", "")

    index_module = project / "dlpipe" / "retrieval" / "index.py"
    index_module.write_text(index_module.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    import json

    changed = set(json.loads(run(*dvc, "status", "--json")))
    importers = {name for name, (module, _) in STAGE_DEPS.items() if index_module.relative_to(project) in
                 {p.relative_to(REPO) for p in import_closure(module)}}
    assert importers, "some stage must import dlpipe/retrieval/index.py"
    importing = {f"{name}@{item}" for name in importers for item in _foreach_items(name)}
    assert importing <= changed, f"dvc status reports {sorted(changed)}, but {sorted(importing - changed)} import index.py"
    # Deps are folders: a stage that depends on dlpipe/retrieval reruns too, and nothing else does.
    edited = index_module.relative_to(project)
    covering = {
        f"{name}@{item}" for name, (_, deps) in STAGE_DEPS.items() if _covered(REPO / edited, deps) for item in _foreach_items(name)
    }
    assert changed == covering


def _foreach_items(stage: str) -> list[str]:
    body = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]
    if "foreach" not in body:
        return []
    items = body["foreach"]
    if isinstance(items, str):  # ${datasets.<kind>}: one kind of params.yaml's datasets
        node = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        for part in items.strip("${}").split("."):
            node = node[part]
        items = node
    return list(items)
