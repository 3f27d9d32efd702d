"""Fresh virtual environments holding only the packages a test names, built offline in a second.

`python -m venv --without-pip` gives an interpreter that sees no site-packages but its own; the named
packages (and their `.libs` / `.dist-info` folders) are symlinked in from the environment running the
tests, and so is the `nsbi_likelihood` reader. Nothing is downloaded or installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO

NUMPY_ONLY = ("numpy",)
WITH_JAX = ("numpy", "jax", "jaxlib", "ml_dtypes", "opt_einsum", "scipy")


def make_venv(root: Path, packages: tuple[str, ...]) -> Path:
    """A venv at root with `packages` and nsbi_likelihood; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    shared = Path(np.__file__).resolve().parents[1]
    for name in packages:
        found = [shared / name, *shared.glob(f"{name}.libs"), *shared.glob(f"{name}-*.dist-info")]
        assert (shared / name).is_dir(), f"{name} is not installed in {shared}"
        for entry in found:
            (site / entry.name).symlink_to(entry)
    (site / "nsbi_likelihood").symlink_to(REPO / "nsbi_likelihood")
    return root / "bin" / "python"
