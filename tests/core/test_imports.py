"""Architecture rules: sbi_core never imports airflow, `import sbi_core.cli` stays light, no import cycles."""

from __future__ import annotations

import pkgutil
import random
import subprocess
import sys

import pytest

import sbi_core
from tests.conftest import REPO

MODULES = sorted(m.name for m in pkgutil.walk_packages(sbi_core.__path__, "sbi_core."))


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    return set(out.split())


def test_sbi_core_never_imports_airflow():
    loaded = _modules_after("\n".join(f"import {m}" for m in MODULES))
    assert not {m for m in loaded if m == "airflow" or m.startswith("airflow.")}


def test_cli_import_is_light():
    """The step entry point must not pay for torch, jax or mlflow unless a step needs them."""
    loaded = _modules_after("import sbi_core.cli, sbi_core.config, sbi_core.storage")
    assert not loaded & {"torch", "jax", "mlflow", "h5py", "s3fs"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modules_import_in_any_order(seed):
    """Catches import cycles: every module imports first in a fresh interpreter, in a shuffled order."""
    order = MODULES[:]
    random.Random(seed).shuffle(order)
    _modules_after("\n".join(f"import {m}" for m in order))


#: The rooms of sbi_core and what each may import from sbi_core. `steps`, `cli`, the `*commands` modules and
#: `analysis` sit on top and may import anything; the base (config, storage, layout, plan, runs, errors) looks
#: only at the base. A stage room may look down to the base and to the rooms listed for it.
BASE = {"sbi_core", "sbi_core.__version__", "sbi_core.config", "sbi_core.config_base", "sbi_core.errors", "sbi_core.storage",
        "sbi_core.layout", "sbi_core.plan", "sbi_core.runs", "sbi_core.tracking",
        "sbi_core.s3", "sbi_core.multipart", "sbi_core.temporaries"}  # storage's own helpers
ROOMS_BELOW = {
    "sbi_core.physics": set(),
    "sbi_core.data": {"sbi_core.physics", "sbi_core.ml"},  # training_sets reads the method names
    "sbi_core.ml": {"sbi_core.physics", "sbi_core.data"},
    "sbi_core.inference": {"sbi_core.physics", "sbi_core.data", "sbi_core.ml"},
    "sbi_core.search": set(),  # the searchers know points and values, nothing of the analysis
    # iterative studies run the stages' own functions (fits, toys, training, generation) and the searches
    "sbi_core.studies": {"sbi_core.physics", "sbi_core.data", "sbi_core.ml", "sbi_core.inference", "sbi_core.search"},
    "sbi_core.publish": {"sbi_core.physics", "sbi_core.data", "sbi_core.ml", "sbi_core.inference"},
}


def _sbi_imports(path) -> set[str]:
    """Every `sbi_core...` module a source file imports (at any depth of the file, lazy imports included)."""
    import ast

    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sbi_core"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sbi_core"))
    return found


@pytest.mark.parametrize("room", sorted(ROOMS_BELOW))
def test_stage_rooms_only_look_down(room):
    """No stage room imports the steps, the CLI or `analysis` on top, nor a room it does not build on."""
    allowed = BASE | {room} | ROOMS_BELOW[room]
    root = REPO / room.replace(".", "/")
    wrong = {}
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith("commands.py"):  # a room's CLI registration sits on top of it
            continue
        bad = sorted(m for m in _sbi_imports(path)
                     if m not in allowed and not any(m.startswith(a + ".") for a in allowed - {"sbi_core"}))
        bad = [m for m in bad if not _is_attribute_of_allowed(m, allowed)]
        if bad:
            wrong[str(path.relative_to(REPO))] = bad
    assert not wrong, wrong


def _is_attribute_of_allowed(name: str, allowed: set[str]) -> bool:
    """`from sbi_core import storage` shows up as `sbi_core.storage`; `from sbi_core.x import f` as `sbi_core.x.f`."""
    parent = name.rsplit(".", 1)[0]
    return parent in allowed and parent != "sbi_core"


def test_the_base_imports_no_stage_room():
    """config, runs, plan, layout, storage look at the base only (config composes the stage *sections*)."""
    sections = {"sbi_core.ml.options", "sbi_core.inference.options"}
    for name in ("config", "config_base", "errors", "storage", "s3", "multipart", "temporaries", "layout", "plan",
                 "runs"):
        imported = _sbi_imports(REPO / "sbi_core" / f"{name}.py")
        outside = {m for m in imported if m not in BASE and m.rsplit(".", 1)[0] not in BASE - {"sbi_core"}
                   and m not in sections and m.rsplit(".", 1)[0] not in sections}
        assert not outside, (name, outside)
