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


def _random_ensembles(run: Path, seed: int = 3) -> None:
    """Untrained benchmark_ratio ensembles (2 members each, random weights, standardised on the run's events)
    for every non-reference benchmark and the energy-scale variations: real networks, saved as training does."""
    import torch

    from sbi_core import storage
    from sbi_core.config import load_config
    from sbi_core.data.format import read_samples
    from sbi_core.layout import RunLayout
    from sbi_core.ml.export import export_network, save_export
    from sbi_core.ml.mlp import MLP
    from sbi_core.ml.model_io import save_model

    layout = RunLayout(str(run))
    cfg = load_config(layout.config)
    x = torch.from_numpy(read_samples(run / "events.h5", 0, 1500)["samples/observations"].astype(np.float32))
    torch.manual_seed(seed)
    keys = [("benchmark_ratio", b, "nominal") for b in cfg.benchmark_names if b != cfg.sampling_benchmark]
    keys += [("benchmark_ratio", cfg.sampling_benchmark, f"energy_scale_{d}") for d in ("up", "down")]
    for method, head, variation in keys:
        ids = [f"{method}-{head}-{variation}-m{i:02d}" for i in range(2)]
        for nid in ids:
            model = MLP(n_x=x.shape[1], n_theta=0, n_out=1, hidden=[8], activation="tanh")
            model.set_standardisation(x)
            save_model(layout.network_file(nid, "model.pt"), model, network_id=nid, method=method,
                       parametrised=False, output="log_ratio")
            save_export(layout.network_file(nid, "export.npz"), export_network(model, network_id=nid, method=method))
        storage.write_json(layout.ensemble(method, head, variation), {"status": "ok", "members": ids})
    storage.write_json(layout.ensembles_index, {"ensembles": [dict(zip(("method", "head", "variation"), k,
                                                                       strict=True)) for k in keys]})


def test_a_learned_artefact_evaluates_new_events_with_its_networks(small_run, tmp_path):
    from nsbi_likelihood import FormatError, load
    from sbi_core.data.format import read_samples
    from sbi_core.data.likelihood_arrays import LikelihoodArrays
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.inference.nll import NLLModel
    from sbi_core.ml import evaluate
    from sbi_core.runs import load_run

    run = tmp_path / "run"
    # every parameter fixed: the export needs a fit result, not a fit of untrained networks
    steps.derive(str(small_run), str(run), ["inference.source=learned", "inference.chunk_rows=4096",
                                            "inference.fix={cW: 0.1, cHW: -0.1, lumi: 0.0, energy_scale: 0.0}"])
    shutil.copy(small_run / "events.h5", run / "events.h5")  # the networks are standardised on these events
    _random_ensembles(run)
    evaluate._load_cached.cache_clear()
    summary = inference.dataset(str(run))
    inference.likelihood(str(run), [int(b) for b in summary["likelihood_batches"]])
    inference.likelihood_join(str(run))
    inference.fit(str(run))
    art = export_likelihood(str(run), str(tmp_path / "lik"))
    assert art["networks"] == 14  # 5 benchmarks + 2 variations, 2 members each
    lik = load(art["archive"])
    layout, cfg, _ = load_run(str(run))
    events = read_samples(small_run / "events.h5", 4500, 6000)  # events the dataset was not made from
    x, names = events["samples/observations"], cfg.observable_names
    reader = lik.per_event(x, observables=names)
    dinfo = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    pipeline: LikelihoodArrays = evaluate.learned_arrays(layout, cfg, {"observations": x, "weight": np.ones(len(x))},
                                                         np.asarray(dinfo.xsec), np.asarray(dinfo.xsec_var))
    # torch evaluates the networks in float32, the reader in float64: equal to float32 rounding
    np.testing.assert_allclose(reader["log_ratio"], pipeline.log_ratio, atol=2e-6)
    np.testing.assert_allclose(reader["log_ratio_var"][..., 0], pipeline.log_ratio_var, atol=2e-6)
    _, norm = inference.load_arrays(layout, cfg)
    model = NLLModel.from_arrays(pipeline, luminosity=cfg.inference.luminosity, normalization=norm,
                                 interpolation=cfg.inference.interpolation)
    p = np.array([0.2, -0.1, 0.3, -0.4])
    assert lik.nll(p, events=x, observables=names) == pytest.approx(model.value(p), rel=1e-6)
    assert lik.nll(p) == pytest.approx(inference.load_model(layout, cfg).value(p), rel=1e-10)
    with pytest.raises(FormatError, match="observables .* do not match"):
        lik.per_event(x[:, :4], observables=names[:4])
