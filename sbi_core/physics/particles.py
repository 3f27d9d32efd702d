"""Final-state particles of many events as fixed-width arrays, and their kinematics.

What to use when:
- `Particles(pid, p4)`: the events' particles, `pid (n, m) int64` (PDG id, 0 = empty slot) and
  `p4 (n, m, 4) float64` (E, px, py, pz in GeV). Build one from ragged lists with `Particles.from_lists`.
  Empty slots hold zero momenta; the kinematic properties (`pt`, `eta`, ...) are NaN there.
- `Particles.of_type(types)`: the (n, m) mask of slots holding one of the object types of `OBJECT_TYPES`;
  `Particles.leading(types, k)`: the k highest-pT objects of those types per event, sorted by pT.
- `pt`, `eta`, `phi`, `rapidity`, `mass` (module functions) work on any (..., 4) momenta, e.g. a pair sum.
- `Particles.flat()` / `Particles.from_flat()`: (n, 5 m) float64 columns, e.g. for `samples/latent`.

Vectorised numpy; shapes are checked and never broadcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Object types and the |PDG id|s they hold. Anything else (e.g. a stable BSM particle) belongs to no type.
OBJECT_TYPES: dict[str, tuple[int, ...]] = {
    "electron": (11,),
    "muon": (13,),
    "tau": (15,),
    "photon": (22,),
    "jet": (1, 2, 3, 4, 5, 21),
    "neutrino": (12, 14, 16),
}
#: Types a detector sees (the others escape: they make missing transverse momentum).
VISIBLE_TYPES: tuple[str, ...] = ("electron", "muon", "tau", "photon", "jet")
FLAT_FIELDS = ("pid", "E", "px", "py", "pz")


def _check_p4(p4: np.ndarray) -> np.ndarray:
    arr = np.asarray(p4)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"p4: expected a (..., 4) array of (E, px, py, pz), got shape {arr.shape}")
    return arr


def pt(p4: np.ndarray) -> np.ndarray:
    """Transverse momentum sqrt(px^2 + py^2), shape p4.shape[:-1]."""
    p = _check_p4(p4)
    return np.hypot(p[..., 1], p[..., 2])


def phi(p4: np.ndarray) -> np.ndarray:
    """Azimuth atan2(py, px) in (-pi, pi]."""
    p = _check_p4(p4)
    return np.arctan2(p[..., 2], p[..., 1])


def eta(p4: np.ndarray) -> np.ndarray:
    """Pseudorapidity asinh(pz / pt); +-inf along the beam (pt = 0)."""
    p = _check_p4(p4)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.arcsinh(p[..., 3] / pt(p))


def rapidity(p4: np.ndarray) -> np.ndarray:
    """Rapidity 1/2 log((E + pz) / (E - pz))."""
    p = _check_p4(p4)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log((p[..., 0] + p[..., 3]) / (p[..., 0] - p[..., 3]))


def mass(p4: np.ndarray) -> np.ndarray:
    """Invariant mass sqrt(E^2 - |p|^2), 0 where rounding makes the square slightly negative."""
    p = _check_p4(p4)
    m2 = p[..., 0] ** 2 - p[..., 1] ** 2 - p[..., 2] ** 2 - p[..., 3] ** 2
    return np.sqrt(np.maximum(m2, 0.0))


def delta_phi(phi1: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """|phi1 - phi2| folded into [0, pi]."""
    d = np.abs(np.asarray(phi1) - np.asarray(phi2)) % (2 * np.pi)
    return np.where(d > np.pi, 2 * np.pi - d, d)


def pid_mask(pid: np.ndarray, types: Iterable[str]) -> np.ndarray:
    """True where |pid| belongs to one of the object types (ValueError naming an unknown type)."""
    wanted: list[int] = []
    for t in types:
        if t not in OBJECT_TYPES:
            raise ValueError(f"unknown object type {t!r}; known: {sorted(OBJECT_TYPES)}")
        wanted.extend(OBJECT_TYPES[t])
    return np.isin(np.abs(pid), wanted) & (pid != 0)


def object_type_index(pid: np.ndarray, types: Sequence[str]) -> np.ndarray:
    """(same shape as pid) int: the position in `types` of each particle's type, -1 for none of them."""
    out = np.full(np.shape(pid), -1, dtype=np.int64)
    for i, t in enumerate(types):
        out[pid_mask(pid, [t])] = i
    return out


@dataclass(frozen=True)
class Particles:
    """The particles of n events in m slots each: pid (n, m) int64 (0 = empty), p4 (n, m, 4) float64 GeV."""

    pid: np.ndarray
    p4: np.ndarray

    def __post_init__(self) -> None:
        pid, p4 = self.pid, self.p4
        if not isinstance(pid, np.ndarray) or pid.ndim != 2 or pid.dtype != np.int64:
            raise ValueError(f"Particles.pid: expected int64 (n, m), got {getattr(pid, 'dtype', type(pid))} "
                             f"{getattr(pid, 'shape', '')}")
        if not isinstance(p4, np.ndarray) or p4.dtype != np.float64 or p4.shape != (*pid.shape, 4):
            raise ValueError(f"Particles.p4: expected float64 {(*pid.shape, 4)} (E, px, py, pz), got "
                             f"{getattr(p4, 'dtype', type(p4))} {getattr(p4, 'shape', '')}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, n: int, m: int) -> Particles:
        """n events with m empty slots each."""
        return cls(np.zeros((n, m), dtype=np.int64), np.zeros((n, m, 4), dtype=np.float64))

    @classmethod
    def from_lists(cls, pids: Sequence[Sequence[int]], p4s: Sequence[Sequence[Sequence[float]]],
                   m: int | None = None) -> Particles:
        """Ragged per-event lists (pids[i][j], p4s[i][j] = (E, px, py, pz)) padded to m slots (default: the most)."""
        if len(pids) != len(p4s):
            raise ValueError(f"from_lists: {len(pids)} pid lists but {len(p4s)} momentum lists")
        width = max((len(p) for p in pids), default=0) if m is None else m
        out = cls.empty(len(pids), width)
        for i, (ids, moms) in enumerate(zip(pids, p4s, strict=True)):
            if len(ids) != len(moms):
                raise ValueError(f"from_lists: event {i} has {len(ids)} pids but {len(moms)} momenta")
            if len(ids) > width:
                raise ValueError(f"from_lists: event {i} has {len(ids)} particles, more than m={width}")
            if ids:
                out.pid[i, : len(ids)] = ids
                out.p4[i, : len(ids)] = np.asarray(moms, dtype=np.float64).reshape(len(ids), 4)
        return out

    @classmethod
    def concatenate(cls, parts: Sequence[Particles]) -> Particles:
        """Events of several Particles (same m) one after another."""
        if not parts:
            raise ValueError("concatenate: no parts")
        widths = {p.n_slots for p in parts}
        if len(widths) != 1:
            raise ValueError(f"concatenate: parts have different slot counts {sorted(widths)}")
        return cls(np.concatenate([p.pid for p in parts]), np.concatenate([p.p4 for p in parts]))

    # ------------------------------------------------------------------ shape
    @property
    def n_events(self) -> int:
        return int(self.pid.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.pid.shape[1])

    def __len__(self) -> int:
        return self.n_events

    @property
    def present(self) -> np.ndarray:
        """(n, m) True where a slot holds a particle."""
        return self.pid != 0

    # ------------------------------------------------------------------ kinematics (NaN at empty slots)
    def _masked(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.present, values, np.nan)

    @property
    def pt(self) -> np.ndarray:
        return self._masked(pt(self.p4))

    @property
    def eta(self) -> np.ndarray:
        return self._masked(eta(self.p4))

    @property
    def phi(self) -> np.ndarray:
        return self._masked(phi(self.p4))

    @property
    def rapidity(self) -> np.ndarray:
        return self._masked(rapidity(self.p4))

    @property
    def mass(self) -> np.ndarray:
        return self._masked(mass(self.p4))

    @property
    def energy(self) -> np.ndarray:
        return self._masked(self.p4[..., 0])

    @property
    def charge(self) -> np.ndarray:
        """Electric charge of charged leptons (-1 for e-, mu-, tau- i.e. pid > 0), NaN for anything else."""
        lep = pid_mask(self.pid, ("electron", "muon", "tau"))
        return np.where(lep, -np.sign(self.pid).astype(np.float64), np.nan)

    # ------------------------------------------------------------------ selection
    def of_type(self, types: Iterable[str]) -> np.ndarray:
        """(n, m) True where the slot holds an object of one of the types (`OBJECT_TYPES`)."""
        return pid_mask(self.pid, types)

    def select(self, mask: np.ndarray) -> Particles:
        """The same slots with every particle outside mask (n, m) removed (pid 0, zero momentum)."""
        m = np.asarray(mask)
        if m.shape != self.pid.shape or m.dtype != bool:
            raise ValueError(f"select: expected a bool mask of shape {self.pid.shape}, got {m.dtype} {m.shape}")
        keep = m & self.present
        return Particles(np.where(keep, self.pid, 0), np.where(keep[..., None], self.p4, 0.0))

    def take(self, rows: np.ndarray) -> Particles:
        """The events at rows (an index array or an (n,) bool mask), all slots."""
        return Particles(self.pid[rows], self.p4[rows])

    def sorted_by_pt(self, mask: np.ndarray | None = None, k: int | None = None) -> Particles:
        """Per event, the particles in mask (default: all) by decreasing pT, then empty slots; k slots (default m).

        The sort is stable: equal pT keep their slot order."""
        sel = self.present if mask is None else self.select(mask).present
        k = self.n_slots if k is None else k
        if k < 0:
            raise ValueError(f"sorted_by_pt: k must be >= 0, got {k}")
        key = np.where(sel, -pt(self.p4), np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        keep = np.take_along_axis(sel, order, axis=1)
        pid = np.where(keep, np.take_along_axis(self.pid, order, axis=1), 0)
        p4 = np.where(keep[..., None], np.take_along_axis(self.p4, order[..., None], axis=1), 0.0)
        if k > self.n_slots:  # pad
            pad = k - self.n_slots
            pid = np.concatenate([pid, np.zeros((self.n_events, pad), dtype=np.int64)], axis=1)
            p4 = np.concatenate([p4, np.zeros((self.n_events, pad, 4))], axis=1)
        return Particles(pid, p4)

    def leading(self, types: Iterable[str], k: int) -> Particles:
        """The k highest-pT objects of the given types per event, sorted by pT (empty slots where fewer)."""
        return self.sorted_by_pt(self.of_type(types), k)

    def count(self, types: Iterable[str]) -> np.ndarray:
        """(n,) number of objects of the given types per event."""
        return self.of_type(types).sum(axis=1)

    # ------------------------------------------------------------------ flat columns
    def flat(self) -> np.ndarray:
        """(n, 5 m) float64: per slot (pid, E, px, py, pz), slot after slot (names: `flat_names`)."""
        out = np.concatenate([self.pid[..., None].astype(np.float64), self.p4], axis=2)
        return out.reshape(self.n_events, 5 * self.n_slots)

    @staticmethod
    def flat_names(m: int, prefix: str = "p") -> list[str]:
        """Column names of `flat()`: p0_pid, p0_E, p0_px, p0_py, p0_pz, p1_pid, ..."""
        return [f"{prefix}{j}_{f}" for j in range(m) for f in FLAT_FIELDS]

    @classmethod
    def from_flat(cls, columns: np.ndarray) -> Particles:
        """Inverse of `flat()`: columns (n, 5 m) float64."""
        c = np.asarray(columns, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] % 5:
            raise ValueError(f"from_flat: expected (n, 5 m) columns, got shape {c.shape}")
        r = c.reshape(c.shape[0], c.shape[1] // 5, 5)
        pid = r[..., 0]
        if not np.array_equal(pid, np.round(pid)):
            raise ValueError("from_flat: pid columns hold non-integer values")
        return cls(pid.astype(np.int64), np.ascontiguousarray(r[..., 1:]))
