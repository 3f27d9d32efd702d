"""Named observables computed from `Particles` (usually the reconstructed ones): a small grammar, one registry.

Names (`parse` reads them; `compute(names, particles)` returns an (n, k) float64 array, columns in order):

    <var>_<class><i>      one object: the i-th highest-pT object of the class (i = 1..9)
                          var: pt, eta, phi, y (rapidity), e (energy), m (mass)           e.g. pt_l1, eta_j2, phi_a1
    <pvar>_<ref><ref>     a pair of objects, ref = <class>[<i>]                           e.g. m_ll, pt_ll, m_jj, dr_l1j1
                          pvar: m, pt, y, eta, phi, e of the pair's summed four-momentum;
                          dphi (|delta phi| in [0, pi]), deta (|delta eta|), dy (|delta y|), dr (sqrt(deta^2 + dphi^2))
                          an omitted index is the lowest one of that class the other ref does not use:
                          ll = l1 l2, lj = l1 j1, l2l = l2 l1
    n_<class>             number of objects of the class
    met, met_phi          missing transverse momentum: magnitude and azimuth of minus the vector sum of every
                          visible object's pT (electrons, muons, taus, photons, jets)
    ht                    scalar sum of the jets' pT (0 without jets)
    cos_theta_star        Collins-Soper cos(theta*) of the negative lepton in the rest frame of the two leading
                          leptons, the z axis along the pair's longitudinal boost (+z when it is 0)

    class: l (electron or muon), e (electron), mu (muon), ta (tau), a (photon), j (jet)

Units: GeV for pt, e, m, met, ht; none otherwise. `register_observable` adds a fixed name.

Missing objects: an observable whose objects are absent (fewer objects of a class than the index asks,
same-sign leptons for cos_theta_star) is NaN for that event. Cuts (`min <= x < max`) are comparisons, and a
comparison with NaN is false, so an event with a NaN observable fails every cut on that observable; on top
of that, `finite_mask` is the selection "every observable is defined", which LHE ingestion applies (the
event files never hold NaN).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sbi_core.errors import InputError
from sbi_core.physics import particles as kin
from sbi_core.physics.particles import VISIBLE_TYPES, Particles

__all__ = ["CLASSES", "ObservableDef", "UnknownObservable", "compute", "finite_mask", "known_forms",
           "madminer_expression", "parse", "register_observable"]

#: Object classes of the grammar and the particle types (`particles.OBJECT_TYPES`) each holds.
CLASSES: dict[str, tuple[str, ...]] = {
    "l": ("electron", "muon"),
    "e": ("electron",),
    "mu": ("muon",),
    "ta": ("tau",),
    "a": ("photon",),
    "j": ("jet",),
}
_CLASS_WORDS = {"l": "lepton", "e": "electron", "mu": "muon", "ta": "tau", "a": "photon", "j": "jet"}
SINGLE_VARS = ("pt", "eta", "phi", "y", "e", "m")
PAIR_VARS = ("m", "pt", "y", "eta", "phi", "e", "dphi", "deta", "dy", "dr")
_GEV = {"pt", "e", "m"}
_CLASS_RE = "|".join(sorted(CLASSES, key=len, reverse=True))
_SINGLE = re.compile(rf"^({'|'.join(SINGLE_VARS)})_({_CLASS_RE})([1-9])$")
_PAIR = re.compile(rf"^({'|'.join(PAIR_VARS)})_({_CLASS_RE})([1-9]?)({_CLASS_RE})([1-9]?)$")
_COUNT = re.compile(rf"^n_({_CLASS_RE})$")


class UnknownObservable(InputError):
    """A name the grammar does not read; the message lists the known forms."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        why = f" ({reason})" if reason else ""
        super().__init__(f"unknown observable {name!r}{why}; known: {known_forms()}")


class _Event:
    """The particles of a batch, with each class's objects sorted by pT (computed once per class)."""

    def __init__(self, particles: Particles) -> None:
        self.particles = particles
        self._sorted: dict[str, Particles] = {}

    def objects(self, cls: str) -> Particles:
        if cls not in self._sorted:
            self._sorted[cls] = self.particles.leading(CLASSES[cls], self.particles.n_slots)
        return self._sorted[cls]

    def object(self, cls: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(p4 (n, 4), present (n,)) of the index-th (1-based) object of the class; NaN momenta where absent."""
        objs = self.objects(cls)
        n = objs.n_events
        if index > objs.n_slots:
            return np.full((n, 4), np.nan), np.zeros(n, dtype=bool)
        present = objs.present[:, index - 1]
        return np.where(present[:, None], objs.p4[:, index - 1], np.nan), present

    def pid(self, cls: str, index: int) -> np.ndarray:
        objs = self.objects(cls)
        if index > objs.n_slots:
            return np.zeros(objs.n_events, dtype=np.int64)
        return objs.pid[:, index - 1]


@dataclass(frozen=True)
class ObservableDef:
    """One observable: its name, a description and unit for plots, and how to compute it."""

    name: str
    description: str
    unit: str
    fn: Callable[[_Event], np.ndarray]
    #: The same observable as a MadMiner 0.9.6 observable expression (evaluated on the objects of its LHE and
    #: Delphes readers: `l`, `e`, `mu`, `tau`, `a`, `j` sorted by pT, `met`), or None when it has none.
    madminer: str | None = None

    def __call__(self, particles: Particles) -> np.ndarray:
        return self.fn(_Event(particles))


_FIXED: dict[str, ObservableDef] = {}


def register_observable(name: str, description: str, unit: str = "", madminer: str | None = None
                        ) -> Callable[[Callable[[Particles], np.ndarray]], Callable[[Particles], np.ndarray]]:
    """Decorator: add a fixed-name observable computed by fn(particles) -> (n,) float64 (madminer: the same as a
    MadMiner observable expression, when there is one)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"observable name {name!r} is not an identifier")

    def deco(fn: Callable[[Particles], np.ndarray]) -> Callable[[Particles], np.ndarray]:
        if name in _FIXED:
            raise ValueError(f"observable {name!r} registered twice")
        _FIXED[name] = ObservableDef(name, description, unit, lambda ev: fn(ev.particles), madminer)
        parse.cache_clear()
        return fn

    return deco


def known_forms() -> str:
    """The grammar in one line (error messages)."""
    classes = ", ".join(f"{c} ({_CLASS_WORDS[c]})" for c in CLASSES)
    return (f"{', '.join(sorted(_FIXED))}; n_<class>; <var>_<class><i> with var in {list(SINGLE_VARS)}; "
            f"<pvar>_<class>[i]<class>[i] with pvar in {list(PAIR_VARS)}; class: {classes}; "
            "e.g. m_ll, pt_l1, eta_j2, dphi_ll, dr_l1j1, n_j")


# ---------------------------------------------------------------------------------------------- the grammar
def _single(var: str, cls: str, index: int) -> ObservableDef:
    f = {"pt": kin.pt, "eta": kin.eta, "phi": kin.phi, "y": kin.rapidity, "e": lambda p: p[..., 0], "m": kin.mass}[var]
    word = {"pt": "pT", "eta": "pseudorapidity", "phi": "azimuth", "y": "rapidity", "e": "energy", "m": "mass"}[var]

    def fn(ev: _Event) -> np.ndarray:
        p4, present = ev.object(cls, index)
        return np.where(present, f(np.nan_to_num(p4)), np.nan)

    return ObservableDef(f"{var}_{cls}{index}", f"{word} of the {_ordinal(index)} {_CLASS_WORDS[cls]} (by pT)",
                         "GeV" if var in _GEV else "", fn, f"{_mm_object((cls, index))}.{_MM_VAR[var]}")


def _pair(var: str, a: tuple[str, int], b: tuple[str, int], name: str) -> ObservableDef:
    def fn(ev: _Event) -> np.ndarray:
        p1, ok1 = ev.object(*a)
        p2, ok2 = ev.object(*b)
        ok = ok1 & ok2
        p1, p2 = np.nan_to_num(p1), np.nan_to_num(p2)
        if var == "dphi":
            out = kin.delta_phi(kin.phi(p1), kin.phi(p2))
        elif var == "deta":
            out = np.abs(kin.eta(p1) - kin.eta(p2))
        elif var == "dy":
            out = np.abs(kin.rapidity(p1) - kin.rapidity(p2))
        elif var == "dr":
            out = np.hypot(kin.eta(p1) - kin.eta(p2), kin.delta_phi(kin.phi(p1), kin.phi(p2)))
        else:
            s = p1 + p2
            out = {"m": kin.mass, "pt": kin.pt, "y": kin.rapidity, "eta": kin.eta, "phi": kin.phi,
                   "e": lambda p: p[..., 0]}[var](s)
        with np.errstate(invalid="ignore"):
            return np.where(ok, out, np.nan)

    words = {"m": "invariant mass", "pt": "pT", "y": "rapidity", "eta": "pseudorapidity", "phi": "azimuth",
             "e": "energy", "dphi": "|delta phi|", "deta": "|delta eta|", "dy": "|delta y|", "dr": "delta R"}
    what = f"{words[var]} of the {_ordinal(a[1])} {_CLASS_WORDS[a[0]]} and the {_ordinal(b[1])} {_CLASS_WORDS[b[0]]}"
    return ObservableDef(name, what if var in ("dphi", "deta", "dy", "dr") else f"{words[var]} of the sum: {what}",
                         "GeV" if var in _GEV else "", fn, _mm_pair(var, a, b))


def _count(cls: str) -> ObservableDef:
    return ObservableDef(f"n_{cls}", f"number of {_CLASS_WORDS[cls]}s",
                         "", lambda ev: ev.particles.count(CLASSES[cls]).astype(np.float64), f"len({_MM_CLASS[cls]})")


#: MadMiner's names of our object classes and four-vector attributes (vector's Momentum4D: .pt, .eta, ...).
_MM_CLASS = {"l": "l", "e": "e", "mu": "mu", "ta": "tau", "a": "a", "j": "j"}
_MM_VAR = {"pt": "pt", "eta": "eta", "phi": "phi", "y": "rapidity", "e": "e", "m": "m"}


def _mm_object(ref: tuple[str, int]) -> str:
    return f"{_MM_CLASS[ref[0]]}[{ref[1] - 1}]"


def _mm_pair(var: str, a: tuple[str, int], b: tuple[str, int]) -> str:
    """A pair observable as a MadMiner expression."""
    p, q = _mm_object(a), _mm_object(b)
    return {"dphi": f"abs({p}.deltaphi({q}))", "deta": f"abs({p}.eta - {q}.eta)",
            "dy": f"abs({p}.rapidity - {q}.rapidity)", "dr": f"{p}.deltaR({q})"}.get(var, f"({p} + {q}).{_MM_VAR.get(var, var)}")


def madminer_expression(name: str) -> str | None:
    """The observable `name` as a MadMiner observable expression, or None (not an observable of this library,
    or one MadMiner's expressions cannot write, like cos_theta_star)."""
    try:
        return parse(name).madminer
    except UnknownObservable:
        return None


def _ordinal(i: int) -> str:
    return {1: "leading", 2: "second", 3: "third"}.get(i, f"{i}th")


@lru_cache(maxsize=512)
def parse(name: str) -> ObservableDef:
    """The observable a name denotes; UnknownObservable (an InputError) listing the known forms otherwise."""
    if not isinstance(name, str):
        raise UnknownObservable(repr(name), "not a string")
    if name in _FIXED:
        return _FIXED[name]
    if m := _COUNT.match(name):
        return _count(m.group(1))
    if m := _SINGLE.match(name):
        return _single(m.group(1), m.group(2), int(m.group(3)))
    if m := _PAIR.match(name):
        var, ca, ia, cb, ib = m.groups()
        a = int(ia) if ia else None
        b = int(ib) if ib else None
        if a is None:
            a = 1 if not (ca == cb and b == 1) else 2
        if b is None:
            b = 1 if not (ca == cb and a == 1) else 2
        if ca == cb and a == b:
            raise UnknownObservable(name, f"both refs are object {ca}{a}")
        return _pair(var, (ca, a), (cb, b), name)
    raise UnknownObservable(name)


def check_names(names: Sequence[str]) -> list[tuple[int, str]]:
    """(position, message) for every name that is not an observable (config checks)."""
    issues = []
    for i, n in enumerate(names):
        try:
            parse(n)
        except UnknownObservable as exc:
            issues.append((i, str(exc)))
    return issues


def compute(names: Sequence[str], particles: Particles) -> np.ndarray:
    """(n, len(names)) float64, columns in the order of names; NaN where an observable's objects are missing."""
    defs = [parse(n) for n in names]
    ev = _Event(particles)
    out = np.empty((particles.n_events, len(defs)), dtype=np.float64)
    for j, d in enumerate(defs):
        col = d.fn(ev)
        if col.shape != (particles.n_events,):
            raise ValueError(f"observable {d.name}: expected shape ({particles.n_events},), got {col.shape}")
        out[:, j] = col
    return out


def finite_mask(observations: np.ndarray) -> np.ndarray:
    """(n,) True for events whose every observable is finite (all the objects they need exist)."""
    x = np.asarray(observations)
    if x.ndim != 2:
        raise ValueError(f"finite_mask: expected (n, k) observations, got shape {x.shape}")
    return np.isfinite(x).all(axis=1)


# ---------------------------------------------------------------------------------------------- fixed names
def _met_vector(p: Particles) -> tuple[np.ndarray, np.ndarray]:
    vis = p.of_type(VISIBLE_TYPES)
    px = -np.where(vis, p.p4[..., 1], 0.0).sum(axis=1)
    py = -np.where(vis, p.p4[..., 2], 0.0).sum(axis=1)
    return px, py


@register_observable("met", "missing transverse momentum |-(sum of visible pT)|", "GeV", madminer="met.pt")
def _met(p: Particles) -> np.ndarray:
    return np.hypot(*_met_vector(p))


@register_observable("met_phi", "azimuth of the missing transverse momentum", madminer="met.phi")
def _met_phi(p: Particles) -> np.ndarray:
    px, py = _met_vector(p)
    return np.arctan2(py, px)


@register_observable("ht", "scalar sum of the jets' pT", "GeV", madminer="sum(o.pt for o in j)")
def _ht(p: Particles) -> np.ndarray:
    return np.where(p.of_type(CLASSES["j"]), kin.pt(p.p4), 0.0).sum(axis=1)


@register_observable("cos_theta_star", "Collins-Soper cos(theta*) of the negative lepton (two leading leptons)")
def _cos_theta_star(p: Particles) -> np.ndarray:
    lep = p.leading(CLASSES["l"], 2)
    ok = lep.present.all(axis=1) & (lep.pid[:, 0] * lep.pid[:, 1] < 0)
    neg_first = lep.pid[:, 0] > 0  # pid > 0: negative charged lepton
    minus = np.where(neg_first[:, None], lep.p4[:, 0], lep.p4[:, 1])
    plus = np.where(neg_first[:, None], lep.p4[:, 1], lep.p4[:, 0])
    q = minus + plus
    q2 = q[:, 0] ** 2 - q[:, 3] ** 2  # Q^2 + Q_T^2
    m = kin.mass(q)
    sign = np.where(q[:, 3] < 0, -1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = sign * 2.0 * (minus[:, 3] * plus[:, 0] - minus[:, 0] * plus[:, 3]) / (m * np.sqrt(np.maximum(q2, 0.0)))
    return np.where(ok, cos, np.nan)
