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
