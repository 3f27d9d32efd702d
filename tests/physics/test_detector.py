"""Detector response statistics: resolution width, efficiency, acceptance, and variations of the same events."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from sbi_core.physics.detector import Detector, DetectorNoise, DetectorOptions, ObjectResponse
from sbi_core.physics.particles import Particles

N = 100_000


def beam_of(pid: int, energy: float, eta: float, n: int = N, phi_seed: int = 0) -> Particles:
    """n single massless particles of one energy and pseudorapidity, random azimuth."""
    phis = np.random.default_rng(phi_seed).uniform(-math.pi, math.pi, n)
    pt = energy / math.cosh(eta)
    p4 = np.stack([np.full(n, energy), pt * np.cos(phis), pt * np.sin(phis), np.full(n, pt * math.sinh(eta))], axis=1)
    return Particles(np.full((n, 1), pid, dtype=np.int64), p4[:, None, :].copy())


@pytest.mark.parametrize("pid, energy", [(11, 100.0), (13, 500.0), (21, 60.0)])
def test_resolution_width_and_efficiency(pid, energy):
    opts = DetectorOptions()
    resp = {11: opts.electron, 13: opts.muon, 21: opts.jet}[pid]
    truth = beam_of(pid, energy, 0.3)
    reco = Detector(opts).apply(truth, np.random.default_rng(1))
    kept = reco.present[:, 0]
    ratio = reco.p4[kept, 0, 0] / energy
    # sigma/E written out from the stated model, at pT = E / cosh(0.3)
    pt = energy / math.cosh(0.3)
    sigma = math.sqrt(resp.stochastic**2 / energy + (resp.noise / energy) ** 2 + resp.constant**2
                      + (resp.pt_term * pt) ** 2)
    # standard error of a Gaussian's std over ~1e5 events is sigma / sqrt(2n) ~ 0.25%: allow 2%
    assert ratio.std() == pytest.approx(sigma, rel=0.02)
    assert ratio.mean() == pytest.approx(1.0, abs=5 * sigma / math.sqrt(kept.sum()))
    eff = resp.efficiency
    assert kept.mean() == pytest.approx(eff, abs=5 * math.sqrt(eff * (1 - eff) / N) + 1e-12)
    # the direction is kept
    np.testing.assert_allclose(reco.eta[kept, 0], 0.3, atol=1e-12)


def test_acceptance_in_eta_and_pt():
    det = Detector(DetectorOptions(electron=ObjectResponse(stochastic=0.1, eta_max=2.47, pt_min=20.0)))
    rng = np.random.default_rng(2)
    assert not det.apply(beam_of(11, 200.0, 2.6, n=1000), rng).present.any()  # outside |eta| < 2.47
    assert det.apply(beam_of(11, 200.0, -2.4, n=1000), rng).present.all()
    assert not det.apply(beam_of(11, 10.0, 0.0, n=1000), rng).present.any()  # pT 10 far below 20
    # near the threshold the cut is on the reconstructed pT: about half of pT = 20 objects pass
    frac = det.apply(beam_of(11, 20.0, 0.0, n=20_000), rng).present.mean()
    assert 0.47 < frac < 0.53
    # neutrinos and unknown particles are never reconstructed
    assert not det.apply(beam_of(12, 100.0, 0.0, n=100), rng).present.any()
    assert not det.apply(beam_of(1000022, 100.0, 0.0, n=100), rng).present.any()


def test_scale_and_resolution_move_the_same_events_deterministically():
    det = Detector()
    truth = beam_of(11, 150.0, 0.5, n=5000)
    noise = det.draw_noise(truth, np.random.default_rng(3))
    nominal = det.respond(truth, noise)
    assert np.array_equal(nominal.p4, det.apply(truth, np.random.default_rng(3)).p4)  # apply = respond(draw)
    up = det.respond(truth, noise, scale={"electron": 1.02})
    both = nominal.present & up.present
    np.testing.assert_allclose(up.p4[both], 1.02 * nominal.p4[both], rtol=1e-14)
    # the resolution factor stretches each event's deviation from the truth
    wide = det.respond(truth, noise, resolution=1.5)
    keep = nominal.present[:, 0] & wide.present[:, 0]
    dev_nom = nominal.p4[keep, 0, 0] / 150.0 - 1.0
    dev_wide = wide.p4[keep, 0, 0] / 150.0 - 1.0
    np.testing.assert_allclose(dev_wide, 1.5 * dev_nom, rtol=1e-9, atol=1e-15)
    # other types are not touched by an electron scale; noise survives a round trip through columns
    assert np.array_equal(det.respond(truth, noise, scale={"muon": 1.1}).p4, nominal.p4)
    again = DetectorNoise.from_flat(noise.flat())
    assert np.array_equal(det.respond(truth, again).p4, nominal.p4)


def test_options_refuse_bad_values():
    with pytest.raises(ValidationError, match="efficiency"):
        DetectorOptions.model_validate({"muon": {"efficiency": 1.5}})
    with pytest.raises(ValidationError, match="extra"):
        DetectorOptions.model_validate({"muon": {"resolution": 0.1}})
    with pytest.raises(ValueError, match="unknown object types"):
        Detector().respond(beam_of(11, 10.0, 0.0, n=2), DetectorNoise.draw(2, 1, np.random.default_rng(0)),
                           scale={"gluon": 1.0})
    for field in DetectorOptions.model_fields.values():
        assert field.title and field.description
    for field in ObjectResponse.model_fields.values():
        assert field.title and field.description
