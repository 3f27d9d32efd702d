"""Particles and the observables library against values computed by hand from the four-momenta."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbi_core.errors import InputError
from sbi_core.physics import observables as ob
from sbi_core.physics.particles import Particles

# Two leptons worked out by hand (massless):
#   e- : (E, px, py, pz) = (50, 30, 40, 0)   pT 50, eta 0, phi atan2(40, 30)
#   e+ : (25, 0, -15, 20)                     pT 15, eta asinh(20/15) = ln 3, phi -pi/2
#   sum: (75, 30, 25, 20): m^2 = 75^2 - 30^2 - 25^2 - 20^2 = 3700, pT = sqrt(30^2 + 25^2), y = 1/2 ln(95/55)
E1, E2 = (50.0, 30.0, 40.0, 0.0), (25.0, 0.0, -15.0, 20.0)
JET = (100.0, 0.0, 60.0, 80.0)  # pT 60, eta asinh(80/60) = ln 3
NU = (20.0, 20.0, 0.0, 0.0)


def event(*objects: tuple[int, tuple[float, ...]], m: int = 4) -> Particles:
    return Particles.from_lists([[pid for pid, _ in objects]], [[p for _, p in objects]], m=m)


def values(names: list[str], p: Particles) -> dict[str, float]:
    return dict(zip(names, ob.compute(names, p)[0].tolist(), strict=True))


def test_pair_and_single_observables_match_hand_computation():
    p = event((21, JET), (-11, E2), (12, NU), (11, E1))  # slot order is not pT order
    names = ["m_ll", "pt_ll", "y_ll", "pt_l1", "pt_l2", "eta_l2", "phi_l1", "dphi_ll", "dr_ll", "deta_ll",
             "pt_j1", "eta_j1", "m_l1j1", "n_l", "n_j", "n_e", "n_mu", "ht", "met", "e_e2"]
    v = values(names, p)
    phi1 = math.atan2(40, 30)
    dphi = phi1 + math.pi / 2  # phi1 - (-pi/2), below pi
    expected = {
        "m_ll": math.sqrt(3700), "pt_ll": math.hypot(30, 25), "y_ll": 0.5 * math.log(95 / 55),
        "pt_l1": 50, "pt_l2": 15, "eta_l2": math.log(3), "phi_l1": phi1, "dphi_ll": dphi,
        "dr_ll": math.hypot(math.log(3), dphi), "deta_ll": math.log(3), "pt_j1": 60, "eta_j1": math.log(3),
        # leading lepton + jet: (150, 30, 100, 80): m^2 = 150^2 - 30^2 - 100^2 - 80^2 = 5200
        "m_l1j1": math.sqrt(5200), "n_l": 2, "n_j": 1, "n_e": 2, "n_mu": 0, "ht": 60,
        # visible pT sum (30, 85): the neutrino is invisible; met is its magnitude
        "met": math.hypot(30, 85), "e_e2": 25,
    }
    for name, want in expected.items():
        assert v[name] == pytest.approx(want, rel=1e-12, abs=1e-12), name


def test_missing_objects_give_nan():
    p = event((11, E1), (21, JET))
    v = values(["m_ll", "pt_l2", "m_jj", "pt_l1", "cos_theta_star", "n_l"], p)
    assert math.isnan(v["m_ll"]) and math.isnan(v["pt_l2"]) and math.isnan(v["m_jj"])
    assert math.isnan(v["cos_theta_star"])
    assert v["pt_l1"] == 50 and v["n_l"] == 1
    assert not ob.finite_mask(ob.compute(["pt_l1", "pt_l2"], p))[0]


@pytest.mark.parametrize("theta", [0.3, 1.2, 2.5])
@pytest.mark.parametrize("boost", [-1.5, 0.0, 0.8])
def test_collins_soper_angle_of_a_longitudinally_boosted_pair(theta, boost):
    """In the rest frame l- flies at angle theta to z; a boost along z keeps the CS angle, whose axis points
    along the boost (so a backward boost flips its sign)."""
    half = 45.6
    rest_minus = np.array([half, half * math.sin(theta), 0.0, half * math.cos(theta)])
    rest_plus = np.array([half, -half * math.sin(theta), 0.0, -half * math.cos(theta)])

    def boosted(p):
        ch, sh = math.cosh(boost), math.sinh(boost)
        return (ch * p[0] + sh * p[3], p[1], p[2], sh * p[0] + ch * p[3])

    p = event((-13, boosted(rest_plus)), (13, boosted(rest_minus)))
    v = values(["cos_theta_star", "m_ll", "y_ll"], p)
    sign = -1.0 if boost < 0 else 1.0
    assert v["cos_theta_star"] == pytest.approx(sign * math.cos(theta), abs=1e-12)
    assert v["m_ll"] == pytest.approx(2 * half, rel=1e-12)
    assert v["y_ll"] == pytest.approx(boost, abs=1e-12)


def test_same_sign_leptons_have_no_collins_soper_angle():
    assert math.isnan(values(["cos_theta_star"], event((11, E1), (11, E2)))["cos_theta_star"])


def test_grammar_defaults_and_errors():
    assert ob.parse("m_ll").description.startswith("invariant mass")
    assert ob.parse("pt_l1").unit == "GeV" and ob.parse("eta_j2").unit == ""
    p = event((11, E1), (-11, E2), (21, JET))
    same = ob.compute(["m_ll", "m_l1l2", "m_l2l", "dr_lj", "dr_l1j1"], p)[0]
    assert same[0] == same[1] == same[2] and same[3] == same[4]
    for bad in ["foo", "pt_l", "pt_x1", "m_l1l1", "pt_l0", "met_x"]:
        with pytest.raises(ob.UnknownObservable, match="known: .*m_ll") as err:
            ob.parse(bad)
        assert isinstance(err.value, InputError) and repr(bad) in str(err.value)


def test_particles_shape_contract_and_sorting():
    with pytest.raises(ValueError, match="pid"):
        Particles(np.zeros((2, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="p4"):
        Particles(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3, 3)))
    p = event((21, JET), (-11, E2), (12, NU), (11, E1))
    lead = p.leading(("electron", "muon"), 3)
    assert lead.pid[0].tolist() == [11, -11, 0]
    assert np.isnan(lead.pt[0, 2]) and lead.pt[0, :2].tolist() == [50.0, 15.0]
    back = Particles.from_flat(p.flat())
    assert np.array_equal(back.pid, p.pid) and np.array_equal(back.p4, p.p4)
    assert Particles.flat_names(1) == ["p0_pid", "p0_E", "p0_px", "p0_py", "p0_pz"]
    assert p.charge[0, 1] == 1.0 and p.charge[0, 3] == -1.0 and np.isnan(p.charge[0, 0])
