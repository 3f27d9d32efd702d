"""Write small Les Houches event files in MadGraph5_aMC@NLO's layout (the tests', the example's and the bench's).

A Drell-Yan-like toy, q qbar -> Z/gamma* (-> l+ l-) [+ g]: m_ll from a Breit-Wigner peak plus a falling
continuum, the pair's rapidity Gaussian, 1 + cos^2 theta decay angles, and an ISR-like gluon jet that the pair
recoils against in a fraction of events. Each event carries reweighting weights for EFT-like couplings
(c1, c2) through a squared amplitude, w(c) = XWGTUP * (1 + c1 g1 + c2 g2)^2 with g1 growing with m_ll and
g2 with cos theta, so the weights are exactly quadratic in c (morphing on 6 benchmarks is exact).

`write_lhe(path, n, ...)` writes it (gzip when the name ends in .gz), with the weights as MadGraph's
`<rwgt><wgt id='...'>` blocks, as the older `<weights>` list, or not at all (a background-like file);
`truncate_in_event(path, k)` cuts a plain file inside its k-th event; `corrupt_event(path, k)` breaks one
number of event k. Regenerate the shipped example with `python -m tests.physics.lhe_files configs/data`.
"""

from __future__ import annotations

import gzip
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BEAM_ENERGY = 6500.0
MZ, WZ = 91.1876, 2.4952
#: Benchmarks of configs/lhe_example.yaml: SM and a regular pentagon of radius 1 in (c1, c2); weight ids
#: written as MadGraph's reweighting module names them (rwgt_1, ...), 'sm' for the SM point.
BENCHMARKS: dict[str, tuple[float, float]] = {
    "sm": (0.0, 0.0),
    "rwgt_1": (1.0, 0.0),
    "rwgt_2": (0.31, 0.95),
    "rwgt_3": (-0.81, 0.59),
    "rwgt_4": (-0.81, -0.59),
    "rwgt_5": (0.31, -0.95),
}


@dataclass(frozen=True)
class ToyEvents:
    """What was written, for tests: per event the couplings' factors and the final-state momenta."""

    g: np.ndarray  # (n, 2) g1, g2
    nominal: np.ndarray  # (n,) XWGTUP
    pids: list[list[int]]  # final-state pids per event
    p4: list[np.ndarray]  # (k, 4) final-state momenta per event
    cross_section: float

    def weight(self, c: tuple[float, float]) -> np.ndarray:
        """The event weights at couplings c: XWGTUP (1 + c.g)^2."""
        return self.nominal * (1.0 + self.g @ np.asarray(c)) ** 2


def _boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Lorentz boost of four-vectors p (n, 4) by velocities beta (n, 3)."""
    b2 = np.sum(beta**2, axis=1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p[:, 1:], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g2 = np.where(b2 > 0, (gamma - 1.0) / b2, 0.0)
    e = gamma * (p[:, 0] + bp)
    vec = p[:, 1:] + (g2 * bp + gamma * p[:, 0])[:, None] * beta
    return np.concatenate([e[:, None], vec], axis=1)


def toy_events(n: int, seed: int = 0, jet_fraction: float = 0.3, cross_section: float = 1234.5) -> ToyEvents:
    """Draw n toy events (deterministic given seed)."""
    rng = np.random.default_rng(seed)
    peak = rng.random(n) < 0.7
    m = np.where(peak, np.clip(MZ + 0.5 * WZ * rng.standard_cauchy(n), 60.0, 200.0),
                 60.0 * (500.0 / 60.0) ** rng.random(n))
    y = np.clip(rng.normal(0.0, 1.2, n), -2.5, 2.5)
    cos = np.empty(n)
    filled = 0
    while filled < n:  # 1 + cos^2 by rejection
        c = rng.uniform(-1, 1, 2 * n)
        c = c[rng.random(2 * n) * 2.0 < 1.0 + c**2][: n - filled]
        cos[filled : filled + len(c)] = c
        filled += len(c)
    phi_l = rng.uniform(-math.pi, math.pi, n)
    has_jet = rng.random(n) < jet_fraction
    pt = np.where(has_jet, 5.0 + rng.exponential(30.0, n), 0.0)
    phi = rng.uniform(-math.pi, math.pi, n)
    mt = np.sqrt(m**2 + pt**2)
    q = np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], axis=1)
    sin = np.sqrt(1 - cos**2)
    half = m / 2
    rest = np.stack([half, half * sin * np.cos(phi_l), half * sin * np.sin(phi_l), half * cos], axis=1)
    beta = q[:, 1:] / q[:, :1]
    lminus = _boost(rest, beta)
    lplus = _boost(rest * np.array([1, -1, -1, -1]), beta)
    eta_j = rng.normal(0.0, 2.0, n)
    jet = np.stack([pt * np.cosh(eta_j), -pt * np.cos(phi), -pt * np.sin(phi), pt * np.sinh(eta_j)], axis=1)
    flavour = np.where(rng.random(n) < 0.5, 11, 13)
    g = np.stack([0.3 * m / 100.0, 0.4 * cos], axis=1)
    nominal = np.full(n, cross_section)  # MadGraph's event_norm = average: every weight is the cross section
    pids, moms = [], []
    for i in range(n):
        ids = [int(flavour[i]), -int(flavour[i])]
        ps = [lminus[i], lplus[i]]
        if has_jet[i]:
            ids.append(21)
            ps.append(jet[i])
        pids.append(ids)
        moms.append(np.array(ps))
    return ToyEvents(g, nominal, pids, moms, cross_section)


def _line(pid: int, status: int, m1: int, m2: int, p: np.ndarray, mass: float = 0.0) -> str:
    return (f" {pid:8d} {status:2d} {m1:4d} {m2:4d} {0:4d} {0:4d} {p[1]:+.10e} {p[2]:+.10e} {p[3]:+.10e} "
            f"{p[0]:.10e} {mass:.10e} {0.0:.4e} {9.0:.4e}")


def lhe_text(events: ToyEvents, weights: str = "rwgt", benchmarks: dict[str, tuple[float, float]] | None = None,
             generator: str = "MadGraph5_aMC@NLO") -> str:
    """The whole file as text. weights: 'rwgt' (<rwgt><wgt id=..>), 'weights' (<weights> list) or 'none'."""
    bms = BENCHMARKS if benchmarks is None else benchmarks
    out = ['<LesHouchesEvents version="3.0">', "<header>", "<MGVersion>", "3.5.0", "</MGVersion>",
           "<MG5ProcCard>", "import model SMEFTsim_toy", "generate p p > l+ l- @0", "add process p p > l+ l- j @1",
           "</MG5ProcCard>"]
    if weights != "none":
        out += ["<initrwgt>", "<weightgroup name='mg_reweighting' weight_name_strategy='includeIdInWeightName'>"]
        for wid, (c1, c2) in bms.items():
            out.append(f"<weight id='{wid}'> set param_card dim6 1 {c1} # set param_card dim6 2 {c2} </weight>")
        out += ["</weightgroup>", "</initrwgt>"]
    xs = events.cross_section
    out += ["</header>", "<init>", f"2212 2212 {BEAM_ENERGY:.6e} {BEAM_ENERGY:.6e} 0 0 247000 247000 -4 1",
            f"{xs:.6e} {0.01 * xs:.6e} {xs:.6e} 1",
            f"<generator name='{generator}' version='3.5.0'>please cite 1405.0301 </generator>", "</init>"]
    for i in range(len(events.nominal)):
        ps, ids = events.p4[i], events.pids[i]
        total = ps.sum(axis=0)
        x1 = (total[0] + total[3]) / (2 * BEAM_ENERGY)
        x2 = (total[0] - total[3]) / (2 * BEAM_ENERGY)
        quark = 2 if i % 3 else 1
        a = np.array([x1 * BEAM_ENERGY, 0, 0, x1 * BEAM_ENERGY])
        b = np.array([x2 * BEAM_ENERGY, 0, 0, -x2 * BEAM_ENERGY])
        lepton_sum = ps[0] + ps[1]
        mz = math.sqrt(max(lepton_sum[0] ** 2 - np.sum(lepton_sum[1:] ** 2), 0.0))
        lines = [_line(quark, -1, 0, 0, a), _line(-quark, -1, 0, 0, b), _line(23, 2, 1, 2, lepton_sum, mz)]
        lines += [_line(ids[0], 1, 3, 3, ps[0]), _line(ids[1], 1, 3, 3, ps[1])]
        if len(ids) > 2:
            lines.append(_line(ids[2], 1, 1, 2, ps[2]))
        out += ["<event>", f" {len(lines)} {1 if len(ids) == 2 else 2} {events.nominal[i]:+.7e} {mz:.8e} "
                           "7.54677100e-03 1.30000000e-01", *lines]
        w = {wid: float(events.weight(c)[i]) for wid, c in bms.items()} if weights != "none" else {}
        if weights == "rwgt":
            out += ["<mgrwt>", f"<rscale>  0 {mz:.8e}</rscale>", "</mgrwt>", "<rwgt>"]
            out += [f"<wgt id='{wid}'> {v:+.10e} </wgt>" for wid, v in w.items()]
            out.append("</rwgt>")
        elif weights == "weights":
            out += ["<weights>", " ".join(f"{v:+.10e}" for v in w.values()), "</weights>"]
        out.append("</event>")
    out.append("</LesHouchesEvents>")
    return "\n".join(out) + "\n"


def write_lhe(path: Path | str, n: int, *, seed: int = 0, weights: str = "rwgt", jet_fraction: float = 0.3,
              cross_section: float = 1234.5) -> ToyEvents:
    """Write n toy events to path (gzip when it ends in .gz); return what was written."""
    events = toy_events(n, seed, jet_fraction, cross_section)
    text = lhe_text(events, weights)
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime 0: the same events give the same bytes
            fh.write(text.encode())
    else:
        path.write_text(text)
    return events


def truncate_in_event(path: Path | str, k: int) -> None:
    """Cut a plain LHE file in the middle of its k-th event (1-based), as a killed writer leaves it."""
    path = Path(path)
    text = path.read_text()
    start = -1
    for _ in range(k):
        start = text.index("<event>", start + 1)
    path.write_text(text[: start + 60])


def corrupt_event(path: Path | str, k: int) -> None:
    """Replace the first momentum of event k's first particle line by a word."""
    path = Path(path)
    lines = path.read_text().split("\n")
    seen = 0
    for i, line in enumerate(lines):
        if line == "<event>":
            seen += 1
            if seen == k:
                parts = lines[i + 2].split()
                parts[6] = "not-a-number"
                lines[i + 2] = " ".join(parts)
                break
    path.write_text("\n".join(lines))


if __name__ == "__main__":  # regenerate the shipped example files
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "configs/data")
    target.mkdir(parents=True, exist_ok=True)
    write_lhe(target / "lhe_example_0.lhe.gz", 1000, seed=1)
    write_lhe(target / "lhe_example_1.lhe.gz", 600, seed=2, weights="weights")
    print(f"wrote {target}/lhe_example_0.lhe.gz (<rwgt> weights), {target}/lhe_example_1.lhe.gz (<weights> list)")
