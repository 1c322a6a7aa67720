"""One installed namespace, and a trust boundary that imports nothing above it.

The design card's folders (``whitelist/``, ``workflows/``, ``activities/``) stay at the
repository root and install as ``selfheal.whitelist`` and so on (a package-dir mapping in
``pyproject.toml``). These tests check that the tests, the editable install and a wheel
install all see the same modules under ``selfheal``, and that a wheel adds no top-level
``whitelist``, ``workflows``, ``activities`` or ``worker`` module to a user's environment.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import selfheal

ROOT = Path(__file__).resolve().parents[1]
CARD_FOLDERS = ("whitelist", "workflows", "activities")
TOP_LEVEL_NAMES = (*CARD_FOLDERS, "worker")
SOURCE_DIRS = ("selfheal", *CARD_FOLDERS, "tests", "bench", "deploy")


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def _python_files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))] + [ROOT / "worker.py"]


def test_no_code_imports_the_card_folders_as_top_level_modules():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: import {module}"
        for path in _python_files(*SOURCE_DIRS)
        for line, module, level in _imports(path)
        if level == 0 and module.split(".")[0] in TOP_LEVEL_NAMES
    ]
    assert offenders == []


def test_the_trust_boundary_imports_nothing_from_the_rest_of_selfheal():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: import {module}"
        for path in sorted((ROOT / "whitelist").glob("*.py"))
        for line, module, level in _imports(path)
        if level == 0 and module.split(".")[0] == "selfheal"
    ]
    assert offenders == []
    # And at run time: importing it loads no other selfheal module.
    probe = (
        "import sys, selfheal.whitelist; "
        "print([m for m in sys.modules if m.startswith('selfheal') and m != 'selfheal' "
        "and not m.startswith('selfheal.whitelist')])"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_editable_install_maps_the_card_folders_under_selfheal():
    import selfheal.activities
    import selfheal.whitelist
    import selfheal.workflows

    for name in CARD_FOLDERS:
        module = sys.modules[f"selfheal.{name}"]
        assert Path(module.__file__).parent == ROOT / name
    assert Path(selfheal.__file__).parent == ROOT / "selfheal"


def _module_names(package_dirs: dict[str, Path]) -> set[str]:
    names = set()
    for package, directory in package_dirs.items():
        for path in directory.rglob("*.py"):
            rel = path.relative_to(directory).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            names.add(".".join([package, *parts]))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (built,) = out.glob("selfheal-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package_with_the_same_modules(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"selfheal"}
    in_wheel = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    in_checkout = _module_names({"selfheal": ROOT / "selfheal", **{f"selfheal.{d}": ROOT / d for d in CARD_FOLDERS}})
    assert in_wheel == in_checkout
    assert "selfheal/whitelist/py.typed" in names


def test_a_fresh_venv_with_the_wheel_has_no_top_level_whitelist(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)  # what pip does with a pure wheel, without needing pip in the venv
    # Dependencies come from this test run's environment, appended after the venv's own
    # site-packages; a plain path line in a .pth does not run that environment's editable
    # finder, so selfheal can only come from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    probe = """
import importlib, json, sys
result = {}
for name in ("whitelist", "workflows", "activities", "worker"):
    try:
        importlib.import_module(name)
        result[name] = "importable"
    except ImportError:
        result[name] = "missing"
for name in ("selfheal.whitelist", "selfheal.workflows.incident", "selfheal.activities.remediate", "selfheal.worker"):
    result[name] = importlib.import_module(name).__file__
print(json.dumps(result))
"""
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for name in TOP_LEVEL_NAMES:
        assert result[name] == "missing", f"import {name} must fail with only selfheal installed"
    for name in ("selfheal.whitelist", "selfheal.workflows.incident", "selfheal.activities.remediate", "selfheal.worker"):
        assert result[name].startswith(str(site)), (name, result[name])


def test_workflow_modules_hold_no_mutable_state_a_shared_import_could_leak_between_runs():
    # The worker's sandbox passes every module through (selfheal.worker.WORKFLOW_RUNNER):
    # one import serves all workflow runs, so module-level state must be immutable.
    import importlib
    import types

    mutable = (list, dict, set, bytearray)
    offenders = []
    for path in sorted((ROOT / "workflows").glob("*.py")):
        module = importlib.import_module(f"selfheal.workflows.{path.stem}" if path.stem != "__init__" else "selfheal.workflows")
        for name, value in vars(module).items():
            if not name.startswith("__") and isinstance(value, mutable) and not isinstance(value, types.MappingProxyType):
                offenders.append(f"{module.__name__}.{name}: {type(value).__name__}")
    assert offenders == []
