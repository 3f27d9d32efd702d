"""LHE ingestion on small files the tests write in MadGraph's layout: weights mapped to benchmarks (rwgt, weights
list, gzip, nominal-only), observables and morphing on the ingested events, errors naming file and event,
resume after a truncated file, and combine on shards whose sizes the plan does not know."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from sbi_core import steps
from sbi_core.analysis import validate_analysis as validate_config
from sbi_core.data.format import read_samples
from sbi_core.data.ingest import ingest_lhe
from sbi_core.errors import ConfigError, InputError, ShardError
from sbi_core.layout import RunLayout
from sbi_core.physics import observables as ob
from sbi_core.physics.lhe import LHESimulator
from sbi_core.physics.lhe_reader import LHEFormatError
from sbi_core.physics.particles import Particles
from tests.conftest import REPO
from tests.physics.lhe_files import BENCHMARKS, corrupt_event, truncate_in_event, write_lhe

XSEC = 1234.5
IDS = {"sm": "sm", "rwgt_1": "p1", "rwgt_2": "p2", "rwgt_3": "p3", "rwgt_4": "p4", "rwgt_5": "p5"}
OBS = ["m_ll", "pt_ll", "y_ll", "cos_theta_star", "pt_l1", "eta_l2", "dphi_ll"]
# A detector that sees everything perfectly: every event passes, observables = truth.
PERFECT = {t: {"eta_max": 10.0} for t in ("electron", "muon", "tau", "photon", "jet")}


def raw_config(files: list[Any], **options: Any) -> dict[str, Any]:
    example = yaml.safe_load((REPO / "configs" / "lhe_example.yaml").read_text())
    data = copy.deepcopy(example)
    data["observables"] = [{"name": n} for n in OBS]
    data["cuts"] = []
    data["simulator"]["options"] = {"files": files, "weights": IDS, "nominal": ["sm"], "max_particles": 4,
                                    "part_events": 50, "detector": PERFECT,
                                    "energy_scale": {"lepton_scale": ["electron", "muon"]}, **options}
    data["generation"] = {"events": 10**6, "shards": len(files), "shards_per_group": 2, "seed": 3}
    return data


def write_config(tmp: Path, files: list[Any], **options: Any) -> Path:
    path = tmp / f"cfg-{len(list(tmp.glob('cfg-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw_config(files, **options)))
    return path


def ingest_run(tmp: Path, files: list[Any], name: str = "run", **options: Any) -> RunLayout:
    run = tmp / name
    steps.configure(str(write_config(tmp, files, **options)), str(run))
    ingest_lhe(str(run), list(range(len(files))))
    return RunLayout(str(run))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("lhe")
    return {
        "rwgt": (d / "rwgt.lhe", write_lhe(d / "rwgt.lhe", 180, seed=5, cross_section=XSEC)),
        "gz": (d / "rwgt.lhe.gz", write_lhe(d / "rwgt.lhe.gz", 180, seed=5, cross_section=XSEC)),
        "weights": (d / "w.lhe", write_lhe(d / "w.lhe", 180, seed=5, weights="weights", cross_section=XSEC)),
        "plain": (d / "bkg.lhe", write_lhe(d / "bkg.lhe", 120, seed=6, weights="none", cross_section=50.0)),
    }


def test_weights_are_mapped_to_benchmarks_and_normalised(tmp_path, files):
    path, toy = files["rwgt"]
    layout = ingest_run(tmp_path, [str(path)])
    s = read_samples(layout.shard(0))
    assert s["samples/observations"].shape == (180, len(OBS))  # the perfect detector keeps every event
    norm = XSEC / toy.nominal.sum()  # the nominal weights of all events sum to the <init> cross section
    for b, wid in enumerate(IDS):
        np.testing.assert_allclose(s["samples/weights"][:, b], norm * toy.weight(BENCHMARKS[wid]), rtol=1e-9)
    assert s["samples/weights"][:, 0].sum() == pytest.approx(XSEC, rel=1e-12)
    # nuisance columns: lumi (normalization) x (1 +- 0.017) of the sm weight; lepton_scale moves observables only
    np.testing.assert_allclose(s["samples/weights"][:, 6], 1.017 * s["samples/weights"][:, 0], rtol=1e-12)
    np.testing.assert_allclose(s["samples/weights"][:, 7], s["samples/weights"][:, 0] / 1.017, rtol=1e-12)
    np.testing.assert_array_equal(s["samples/weights"][:, 8], s["samples/weights"][:, 0])
    with h5py.File(layout.shard(0)) as f:
        assert f.attrs["n_events"] == 180 and f.attrs["n_generated"] == 180
        assert f.attrs["cross_section_pb"] == XSEC


def test_morphing_on_ingested_weights_matches_the_direct_weights(tmp_path, files):
    """Quadratic morphing on the config's benchmarks reproduces the weight at any (c1, c2) (exact by construction)."""
    path, toy = files["rwgt"]
    layout = ingest_run(tmp_path, [str(path)])
    with h5py.File(layout.shard(0)) as f:
        matrix = f["morphing/morphing_matrix"][()]
        powers = f["morphing/components"][()]
        w = f["samples/weights"][:, :6]
    norm = XSEC / toy.nominal.sum()
    for theta in np.random.default_rng(0).uniform(-1, 1, (5, 2)):
        mono = np.prod(theta ** powers, axis=1)
        np.testing.assert_allclose(w @ (mono @ matrix), norm * toy.weight(tuple(theta)), rtol=1e-8)


def test_shape_variations_come_from_weight_ids(tmp_path, files):
    """A shape_weight nuisance's +-1 columns are the sm weight times the event's variation weight / XWGTUP."""
    path, toy = files["rwgt"]
    data = raw_config([str(path)], variations={"pdf": {"up": "rwgt_1", "down": "rwgt_4"}})
    data["nuisance"].append({"name": "pdf", "kind": "shape_weight", "size": 1.0})
    cfg = tmp_path / "pdf.yaml"
    cfg.write_text(yaml.safe_dump(data))
    steps.configure(str(cfg), str(tmp_path / "run"))
    ingest_lhe(str(tmp_path / "run"), [0])
    w = read_samples(RunLayout(str(tmp_path / "run")).shard(0))["samples/weights"]
    norm = XSEC / toy.nominal.sum()
    np.testing.assert_allclose(w[:, 10], norm * toy.weight(BENCHMARKS["rwgt_1"]), rtol=1e-9)  # pdf_up
    np.testing.assert_allclose(w[:, 11], norm * toy.weight(BENCHMARKS["rwgt_4"]), rtol=1e-9)  # pdf_down


def test_gzip_and_weights_list_files_give_the_same_events(tmp_path, files):
    ref = read_samples(ingest_run(tmp_path, [str(files["rwgt"][0])], "a").shard(0))
    for key in ("gz", "weights"):
        other = read_samples(ingest_run(tmp_path, [str(files[key][0])], key).shard(0))
        for name in ref:
            np.testing.assert_allclose(other[name], ref[name], rtol=1e-9, err_msg=f"{key}: {name}")


def test_events_without_reweighting_get_the_nominal_weight_where_listed(tmp_path, files):
    path, toy = files["plain"]
    every = list(IDS.values())
    s = read_samples(ingest_run(tmp_path, [str(path)], "bkg", nominal=every).shard(0))
    w = s["samples/weights"][:, :6]
    np.testing.assert_allclose(w, np.full_like(w, 50.0 / len(toy.nominal)), rtol=1e-12)
    with pytest.raises(InputError, match=r"files\[0\]\.uri: LHE file \S+bkg\.lhe declares no reweighting weights "
                                         r"\(no <initrwgt>\), but benchmarks \['p1', 'p2', 'p3', 'p4', 'p5'\]"):
        ingest_run(tmp_path, [str(path)], "bkg-strict")  # refused at configure, before any event is read


def test_observables_are_those_of_the_true_leptons(tmp_path, files):
    """Without resolution and with full acceptance, observables equal the ones computed by hand from the
    momenta the file holds: m_ll of the two leptons, and the truth latent columns hold those momenta."""
    path, toy = files["rwgt"]
    layout = ingest_run(tmp_path, [str(path)])  # PERFECT: ObjectResponse defaults have no resolution term
    s = read_samples(layout.shard(0))
    x, z = s["samples/observations"], s["samples/latent"]
    lm, lp = np.array([p[0] for p in toy.p4]), np.array([p[1] for p in toy.p4])
    q = lm + lp
    m = np.sqrt(q[:, 0] ** 2 - (q[:, 1:] ** 2).sum(axis=1))
    np.testing.assert_allclose(x[:, 0], m, rtol=1e-9)
    np.testing.assert_allclose(x[:, 4], np.maximum(np.hypot(lm[:, 1], lm[:, 2]), np.hypot(lp[:, 1], lp[:, 2])),
                               rtol=1e-9)
    truth = Particles.from_flat(z[:, : 5 * 4])
    np.testing.assert_allclose(ob.compute(OBS, truth), x, rtol=1e-12)


def test_observations_at_moves_lepton_energies_exactly(tmp_path, files):
    layout = ingest_run(tmp_path, [str(files["rwgt"][0])], detector={})  # default (ATLAS-like) detector
    _, cfg, _ = steps.load_run(layout.root)
    sim = LHESimulator(cfg)
    s = read_samples(layout.shard(0))
    x, z = s["samples/observations"], s["samples/latent"]
    np.testing.assert_array_equal(sim.observations_at(x, z, np.array([0.0, 0.0])), x)
    np.testing.assert_array_equal(sim.observations_at(x, z, np.array([1.0, 0.0])), x)  # lumi moves nothing
    up = sim.observations_at(x, z, np.array([0.0, 1.0]))
    kept = np.isfinite(up).all(axis=1)
    assert kept.mean() > 0.95  # a 0.5% scale loses only events at an acceptance edge
    m_ll, pt_l1, eta_l2, cos = (OBS.index(n) for n in ("m_ll", "pt_l1", "eta_l2", "cos_theta_star"))
    np.testing.assert_allclose(up[kept, m_ll], 1.005 * x[kept, m_ll], rtol=1e-12)
    np.testing.assert_allclose(up[kept, pt_l1], 1.005 * x[kept, pt_l1], rtol=1e-12)
    np.testing.assert_allclose(up[kept, eta_l2], x[kept, eta_l2], rtol=1e-12)
    np.testing.assert_allclose(up[kept, cos], x[kept, cos], atol=1e-12)


def test_malformed_event_fails_naming_file_and_event_and_keeps_earlier_parts(tmp_path):
    path = tmp_path / "bad.lhe"
    write_lhe(path, 150, seed=1)
    corrupt_event(path, 77)
    run = tmp_path / "run"
    steps.configure(str(write_config(tmp_path, [str(path)])), str(run))
    with pytest.raises(LHEFormatError, match=r"bad\.lhe, event 77: malformed event") as err:
        ingest_lhe(str(run), [0])
    assert err.value.event == 77 and isinstance(err.value, InputError)
    layout = RunLayout(str(run))
    assert Path(layout.ingest_part(0, 0)).exists() and not Path(layout.ingest_part(0, 1)).exists()
    assert not Path(layout.shard(0)).exists()


def test_truncated_file_resumes_after_its_last_complete_part(tmp_path):
    path = tmp_path / "cut.lhe"
    write_lhe(path, 230, seed=8)
    full = path.read_bytes()
    truncate_in_event(path, 123)
    run = tmp_path / "run"
    cfg = write_config(tmp_path, [str(path)])
    steps.configure(str(cfg), str(run))
    with pytest.raises(LHEFormatError, match=r"cut\.lhe, event 123: broken XML"):
        ingest_lhe(str(run), [0])
    layout = RunLayout(str(run))
    assert [Path(layout.ingest_part(0, k)).exists() for k in range(3)] == [True, True, False]  # events 1..100
    path.write_bytes(full)  # the generator finished writing the file
    summary = ingest_lhe(str(run), [0])["files"][0]
    assert summary["resumed_parts"] == 2 and summary["n_read"] == 230 and not summary["skipped"]
    # the resumed shard is the one an uninterrupted ingest writes
    fresh = tmp_path / "fresh"
    steps.configure(str(cfg), str(fresh))
    ingest_lhe(str(fresh), [0])
    a, b = read_samples(layout.shard(0)), read_samples(RunLayout(str(fresh)).shard(0))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not Path(layout.ingest_part(0, 0)).exists()  # parts are removed once the shard is published
    again = ingest_lhe(str(run), [0])["files"][0]
    assert again["skipped"] and again["n_events"] == summary["n_events"]


def test_truncated_gzip_fails_naming_the_file_and_an_event(tmp_path):
    path = tmp_path / "cut.lhe.gz"
    write_lhe(path, 300, seed=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    run = tmp_path / "run"
    steps.configure(str(write_config(tmp_path, [str(path)])), str(run))
    with pytest.raises(LHEFormatError, match=r"cut\.lhe\.gz, event \d+: truncated or corrupt compressed stream"):
        ingest_lhe(str(run), [0])


def test_events_cap_and_cuts(tmp_path, files):
    """generation.events caps what each file contributes (split evenly); cuts apply to reconstructed objects."""
    data = raw_config([str(files["rwgt"][0]), str(files["gz"][0])], detector={})
    data["generation"]["events"] = 60
    data["cuts"] = [{"observable": "m_ll", "min": 80.0, "max": 100.0}]
    cfg_path = tmp_path / "cap.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    steps.configure(str(cfg_path), str(run))
    out = ingest_lhe(str(run), [0, 1])
    for r in out["files"]:
        assert r["n_events"] == 30 and r["n_read"] < 180
    x = read_samples(RunLayout(str(run)).shard(0))["samples/observations"]
    assert ((x[:, 0] >= 80) & (x[:, 0] < 100)).all()


def test_combine_reads_sizes_from_shards_and_still_refuses_bad_ones(tmp_path, files):
    layout = ingest_run(tmp_path, [str(files["rwgt"][0]), str(files["plain"][0])], nominal=list(IDS.values()))
    plan = steps.load_run(layout.root)[2]
    assert not plan.sizes_known
    summary = steps.combine(layout.root, 0)
    assert summary["n_events"] == 180 + 120
    steps.combine(layout.root, None)
    with h5py.File(layout.events) as f:
        w = f["samples/weights"][:, 0]
    assert w.sum() == pytest.approx(XSEC + 50.0, rel=1e-12)  # two processes: their cross sections add
    Path(layout.group(0)).unlink()
    shard = Path(layout.shard(1))
    saved = shard.read_bytes()
    shard.unlink()
    with pytest.raises(ShardError, match="missing"):
        steps.combine(layout.root, 0)
    shard.write_bytes(saved)
    with h5py.File(shard) as f:
        offset = f["samples/observations"].id.get_chunk_info(0).byte_offset
    data = bytearray(saved)
    for k in range(40, 80):
        data[offset + k] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="corrupt"):
        steps.combine(layout.root, 0)
    assert not Path(layout.group(0)).exists()


def test_config_checks_name_the_field(tmp_path, files):
    base = raw_config([str(files["rwgt"][0])])

    def issues(mutate) -> str:
        data = copy.deepcopy(base)
        mutate(data)
        with pytest.raises(ConfigError) as err:
            validate_config(data)
        return str(err.value)

    assert "benchmarks ['p5'] get no weight" in issues(lambda d: d["simulator"]["options"]["weights"].pop("rwgt_5"))
    assert "generation.shards: must equal the number of input files (1)" in issues(
        lambda d: d["generation"].update(shards=2, events=10))
    assert "observables[0].name: unknown observable 'm_xx'" in issues(
        lambda d: d["observables"][0].update(name="m_xx"))
    assert "simulator.options.weights.rwgt_1: unknown benchmark 'q1'" in issues(
        lambda d: d["simulator"]["options"]["weights"].update(rwgt_1="q1"))
    assert "simulator.options.detector.muon.efficiency" in issues(
        lambda d: d["simulator"]["options"].update(detector={"muon": {"efficiency": 2}}))
    assert "needs 'truth' in simulator.options.latent" in issues(
        lambda d: d["simulator"]["options"].update(latent=["partons"]))


def test_generate_refuses_an_lhe_run_and_the_cli_exits_2_naming_the_event(tmp_path, cli):
    path = tmp_path / "bad.lhe"
    write_lhe(path, 60, seed=1)
    corrupt_event(path, 12)
    run = tmp_path / "run"
    cfg = write_config(tmp_path, [str(path)])
    assert cli("configure", "--config", str(cfg), "--run", str(run)).returncode == 0
    gen = cli("generate", "--run", str(run), "--shard", "0")
    assert gen.returncode == 2 and "ingest-lhe" in gen.stderr
    bad = cli("ingest-lhe", "--run", str(run), "--file", "0")
    assert bad.returncode == 2 and "bad.lhe, event 12" in bad.stderr


def _configure_fails(tmp_path: Path, data: dict[str, Any], match: str) -> None:
    cfg = tmp_path / f"bad-{len(list(tmp_path.glob('bad-*.yaml')))}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match=match):
        steps.configure(str(cfg), str(tmp_path / "never"))
    assert not (tmp_path / "never").exists(), "configure must write nothing"


def test_configure_checks_input_files_and_weight_ids(tmp_path, files):
    """A missing file, and a weight id the file's <initrwgt> does not declare, are refused when the run is
    configured, naming the field: even for a benchmark in `nominal`, which would silently fall back to the
    event weight at ingest."""
    path, _ = files["rwgt"]
    _configure_fails(tmp_path, raw_config([str(tmp_path / "gone.lhe")]),
                     r"simulator\.options\.files\[0\]\.uri: LHE file \S+gone\.lhe not found")
    misspelt = {**{k: v for k, v in IDS.items() if k != "sm"}, "SM": "sm"}  # the nominal benchmark's id, misspelt
    _configure_fails(tmp_path, raw_config([str(path)], weights=misspelt),
                     r"simulator\.options\.weights\.SM: weight id 'SM' is not declared in the <initrwgt> of LHE "
                     r"file \S+rwgt\.lhe \(it declares 6: sm, rwgt_1")
    data = raw_config([str(path)], variations={"pdf": {"up": "rwgt_1", "down": "rwgt_9"}})
    data["nuisance"].append({"name": "pdf", "kind": "shape_weight", "size": 1.0})
    _configure_fails(tmp_path, data, r"variations\.pdf\.down: weight id 'rwgt_9' is not declared")


def test_an_event_missing_a_variation_weight_is_named_with_the_id(tmp_path, files):
    path, _ = files["rwgt"]
    text = path.read_text()
    events = text.split("<event>")
    events[3] = events[3].replace("<wgt id='rwgt_4'>", "<wgt id='other'>")  # event 3 lacks rwgt_4
    bad = tmp_path / "novar.lhe"
    bad.write_text("<event>".join(events))
    weights = {k: v for k, v in IDS.items() if k != "rwgt_4"}  # rwgt_4 only for the variation; p4 at XWGTUP
    data = raw_config([str(bad)], weights=weights, nominal=["sm", "p4"],
                      variations={"pdf": {"up": "rwgt_1", "down": "rwgt_4"}})
    data["nuisance"].append({"name": "pdf", "kind": "shape_weight", "size": 1.0})
    cfg = tmp_path / "novar.yaml"
    cfg.write_text(yaml.safe_dump(data))
    steps.configure(str(cfg), str(tmp_path / "run"))
    with pytest.raises(InputError, match=r"novar\.lhe, event 3: no weight with id 'rwgt_4' "
                                         r"\(simulator\.options\.variations\.pdf\.down\) in this event"):
        ingest_lhe(str(tmp_path / "run"), [0])


def test_an_unclosed_event_is_reported_at_its_own_number(tmp_path, files):
    path, _ = files["rwgt"]
    text = path.read_text()
    closes = [i for i in range(len(text)) if text.startswith("</event>", i)]
    bad = tmp_path / "unclosed.lhe"
    bad.write_text(text[:closes[6]] + text[closes[6] + len("</event>"):])  # event 7 is never closed
    layout_cfg = write_config(tmp_path, [str(bad)])
    steps.configure(str(layout_cfg), str(tmp_path / "run"))
    with pytest.raises(LHEFormatError, match=r"unclosed\.lhe, event 7: <event> is never closed"):
        ingest_lhe(str(tmp_path / "run"), [0])
