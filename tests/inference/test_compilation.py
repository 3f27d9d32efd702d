"""The persistent compilation cache: a second process evaluating an already compiled shape loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbi_core.inference.compilation import cache_settings
from tests.conftest import REPO

# A fresh process: build a small NLL and evaluate value, gradient and an HVP block, counting through
# jax.monitoring what the persistent cache did (CompileCounter), then print the counts and the settings.
SCRIPT = """
import json, numpy as np
from sbi_core.inference.compilation import CompileCounter, configure_jax
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.synthetic import synthetic_arrays
arrays = synthetic_arrays(700, 2, truth=(0.3, -0.2), seed=3)
with CompileCounter() as counter:
    model = NLLModel.from_arrays(arrays, luminosity=200.0, normalization=arrays)
    value, grad = model.value_and_grad(np.full(4, 0.1))
    model.hessian(np.full(4, 0.1))
print(json.dumps({"counts": counter.to_json(), "settings": configure_jax().to_json(), "value": value}))
"""


def _run(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_second_process_loads_what_the_first_compiled(tmp_path: Path):
    env = {"SBI_JAX_CACHE_DIR": str(tmp_path / "cache"), "SBI_JAX_CACHE_MIN_COMPILE_S": "0"}
    first = _run(env)
    second = _run(env)
    assert first["settings"]["directory"].startswith(str(tmp_path / "cache") + "/host-")
    assert first["counts"]["misses"] >= 3 and first["counts"]["hits"] == 0  # value+grad, HVP rows, helpers
    assert second["counts"]["misses"] == 0, second
    assert second["counts"]["hits"] == first["counts"]["misses"]
    assert second["value"] == first["value"]  # the loaded executable computes the same number
    assert any(Path(first["settings"]["directory"]).glob("*-cache"))


def test_off_disables_the_cache(tmp_path: Path):
    out = _run({"SBI_JAX_CACHE_DIR": "off"})
    assert out["settings"]["directory"] is None
    assert out["counts"]["hits"] == out["counts"]["misses"] == 0


def test_settings(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("SBI_JAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_settings().directory == str(tmp_path / "sbi-core" / "jax")
    monkeypatch.setenv("SBI_JAX_CACHE_DIR", "OFF")
    assert cache_settings().directory is None
    monkeypatch.setenv("SBI_JAX_CACHE_MAX_GB", "0.5")
    assert cache_settings().max_bytes == 2**29
    monkeypatch.setenv("SBI_JAX_CACHE_MIN_COMPILE_S", "soon")
    with pytest.raises(ValueError, match="SBI_JAX_CACHE_MIN_COMPILE_S='soon'"):
        cache_settings()


def test_an_unwritable_directory_disables_the_cache_without_failing(tmp_path: Path, caplog):
    from sbi_core.inference.compilation import _usable

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert _usable(str(tmp_path / "cache")) and not _usable(str(blocker / "cache"))
    assert "JAX compilation cache disabled" in caplog.text and str(blocker) in caplog.text
