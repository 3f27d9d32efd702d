"""The likelihood artefact: written by `sbi-core export-likelihood`, read by `nsbi_likelihood` in virtual
environments that hold numpy alone (and numpy with JAX), reproducing the pipeline's numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sbi_core import steps
from sbi_core.inference import steps as inference
from sbi_core.publish.artefact import DESCRIPTION, export_likelihood, schema
from tests.publish.venvs import NUMPY_ONLY, WITH_JAX, make_venv

# Run inside a fresh venv: prove the training stack is absent, then evaluate the artefact.
READER = r"""
import importlib.util, json, sys
import numpy as np
absent = {m: importlib.util.find_spec(m) is None for m in ("torch", "h5py", "sbi_core", "iminuit")}
import nsbi_likelihood as nl
job = json.loads(open(sys.argv[1]).read())
lik = nl.load(job["artefact"])
out = {"absent": absent, "jax": importlib.util.find_spec("jax") is not None, "names": lik.names,
       "nll": [lik.nll(np.array(p)) for p in job["points"]]}
fit = lik.fit(backend=job["backend"])
out["fit"] = {"x": fit.x.tolist(), "converged": fit.converged, "iterations": fit.iterations}
if job["backend"] == "jax":
    out["grad"] = lik.grad(np.array(job["points"][0]), backend="jax").tolist()
errors = {}
for name, path in job["bad"].items():
    try:
        nl.load(path)
        errors[name] = None
    except nl.FormatError as exc:
        errors[name] = str(exc)
try:
    lik.nll(np.array(job["points"][0]), events=np.zeros((3, 2)), observables=["x0", "y"])
    errors["observables"] = None
except nl.FormatError as exc:
    errors["observables"] = str(exc)
out["errors"] = errors
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fitted_run(small_run, tmp_path_factory) -> Path:
    """small_run with a pseudo dataset, its exact likelihood arrays and the global fit."""
    run = tmp_path_factory.mktemp("export") / "run"
    steps.derive(str(small_run), str(run), ["inference.chunk_rows=4096"])
    summary = inference.dataset(str(run))
    inference.likelihood(str(run), [int(b) for b in summary["likelihood_batches"]])
    inference.likelihood_join(str(run))
    inference.fit(str(run))
    return run


def _pipeline(run: Path) -> tuple[object, dict]:
    from sbi_core.runs import load_run

    layout, cfg, _ = load_run(str(run))
    return inference.load_model(layout, cfg), json.loads((run / "inference" / "fit.json").read_text())


def _polished(model, x: np.ndarray) -> np.ndarray:
    """The pipeline's best fit, polished by Newton steps with the pipeline's exact gradient and Hessian."""
    for _ in range(20):
        step = np.linalg.solve(model.hessian(x), model.grad(x))
        x = x - step
        if np.abs(step).max() < 1e-12:
            break
    return x


def _bad_artefacts(good: Path, root: Path) -> dict[str, str]:
    """Copies of the artefact with one thing wrong each."""
    out = {}
    missing = root / "missing-array"
    shutil.copytree(good, missing)
    with np.load(missing / "arrays" / "data.npz") as z:
        kept = {k: z[k] for k in z.files if k != "log_ratio_var"}
    np.savez(missing / "arrays" / "data.npz", **kept)
    desc = json.loads((missing / DESCRIPTION).read_text())
    from sbi_core.publish.artefact import _sha256

    desc["files"]["arrays/data.npz"] = _sha256(missing / "arrays" / "data.npz")
    (missing / DESCRIPTION).write_text(json.dumps(desc))
    out["missing_array"] = str(missing)
    version = root / "future-version"
    shutil.copytree(good, version)
    desc = json.loads((version / DESCRIPTION).read_text())
    desc["format_version"] = 99
    (version / DESCRIPTION).write_text(json.dumps(desc))
    out["version"] = str(version)
    changed = root / "changed-file"
    shutil.copytree(good, changed)
    with open(changed / "arrays" / "normalization.npz", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01")
    out["changed"] = str(changed)
    return out


def test_export_writes_a_directory_and_an_archive_validated_by_the_shipped_schema(fitted_run, tmp_path):
    import jsonschema

    summary = export_likelihood(str(fitted_run), str(tmp_path / "lik"))
    root = Path(summary["artefact"])
    assert Path(summary["archive"]).is_file() and (root / DESCRIPTION).is_file()
    desc = json.loads((root / DESCRIPTION).read_text())
    jsonschema.validate(desc, schema())  # the shipped schema (sbi_core/schema/nsbi-likelihood-v1.json)
    assert json.loads((root / "schema.json").read_text()) == schema()
    assert desc["format"] == "nsbi-likelihood" and desc["format_version"] == 1
    assert [o["name"] for o in desc["observables"]] == ["x0", "x1", "x2", "x3", "x4"]
    assert desc["provenance"]["config_hash"] and desc["provenance"]["source"] == "exact"
    assert desc["networks"] is None and desc["normalization"] == "mc"
    assert sorted(desc["files"]) == ["arrays/data.npz", "arrays/normalization.npz", "schema.json"]
    broken = dict(desc, nuisance=[dict(desc["nuisance"][0], constraint="poisson")])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())


@pytest.mark.parametrize("packages, backend", [(NUMPY_ONLY, "numpy"), (WITH_JAX, "jax")], ids=["numpy", "jax"])
def test_the_reader_alone_reproduces_the_pipeline(fitted_run, tmp_path, packages, backend):
    art = export_likelihood(str(fitted_run), str(tmp_path / "lik"))
    model, fit = _pipeline(fitted_run)
    rng = np.random.default_rng(7)
    points = [np.r_[rng.uniform(-1, 1, model.n_pois), rng.normal(0, 1, model.n_params - model.n_pois)]
              for _ in range(20)]
    job = {"artefact": art["archive"], "points": [p.tolist() for p in points], "backend": backend,
           "bad": _bad_artefacts(Path(art["artefact"]), tmp_path)}
    (tmp_path / "job.json").write_text(json.dumps(job))
    python = make_venv(tmp_path / "venv", packages)
    done = subprocess.run([str(python), "-c", READER, str(tmp_path / "job.json")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["absent"] == {"torch": True, "h5py": True, "sbi_core": True, "iminuit": True}
    assert out["jax"] is (backend == "jax") and out["names"] == fit["names"]
    expected = np.array([model.value(p) for p in points])
    np.testing.assert_allclose(out["nll"], expected, rtol=1e-8, atol=0)
    best = _polished(model, np.array([fit["values"][n] for n in fit["names"]]))
    assert out["fit"]["converged"]
    np.testing.assert_allclose(out["fit"]["x"], best, rtol=1e-5, atol=1e-5)
    if backend == "jax":
        np.testing.assert_allclose(out["grad"], model.grad(points[0]), rtol=1e-8, atol=1e-8)
    errors = out["errors"]
    assert "data.npz: missing array 'log_ratio_var'" in errors["missing_array"]
    assert "format_version 99 is not supported" in errors["version"]
    assert "normalization.npz does not match its sha256" in errors["changed"]
    assert "observables ['x0', 'y'] do not match the artefact's ['x0', 'x1', 'x2', 'x3', 'x4']" in errors["observables"]


def test_export_without_a_fit_is_bad_input(small_run, tmp_path, cli):
    run = tmp_path / "run"
    steps.derive(str(small_run), str(run), [])
    summary = inference.dataset(str(run))
    inference.likelihood(str(run), [int(b) for b in summary["likelihood_batches"]])
    inference.likelihood_join(str(run))
    result = cli("export-likelihood", "--run", str(run))
    assert result.returncode == 2 and "no fit result" in result.stderr and "fit.json" in result.stderr
    assert not (run / "export").exists()
