"""The training-set files `sbi-core sample` writes and `sbi-core train` reads, and the network ids.

What to use when:
- `sample_specs(method, cfg)`: the (method, head, variation) sets a method trains, nominal heads first,
  then its per-variation sets; `SampleSpec.network_ids(members)` the networks trained on each.
- `network_id(...)` / `parse_network_id(id)`: the one spelling of a network's name, and back (`NetworkSpec`).
- `TrainingSet`: one split of one set, in memory, every shape and dtype checked;
  `write_training_set(path, ts)` / `read_training_set(path)` store it (HDF5, format `sbi-training-set`).
- `RunLayout.training_set(method, head, variation, split)` / `RunLayout.samples_manifest(method)`: where they live.

Conventions (MadMiner's): y = 0 for x ~ p(x|theta0), y = 1 for x ~ p(x|theta1); the ratio is
r(x|theta0, theta1) = p(x|theta0) / p(x|theta1); log_r_xz = log r(x, z|theta0, theta1) and
t_xz = grad_theta log p(x, z|theta) at theta0, both from the event's weights through morphing.

Heads (documented in docs/training-sets.md):
- carl, rolr, rascal, alice, alices: one head `theta`, parametrised in theta0 against theta1 = the reference
  (the sampling benchmark);
- sally: one head `score` (the score at theta_fixed);
- benchmark_ratio: one head per non-reference basis benchmark b (named after it): benchmark b (theta0 = theta_b,
  y = 0) against the reference (theta1, y = 1).
- Per-variation sets (training.variations, every ratio method, not sally): for each shape systematic k and
  direction, head = the reference benchmark, variation `<k>_up` / `<k>_down`: the reference at nu_k = +-1
  (y = 0) against the reference at nominal nu (y = 1), theta0 = theta1 = the reference. Their networks learn
  log p(x|nu_k = +-1) / p(x|nu = 0) at the reference: the contract's `log_ratio_var` (docs/likelihood-model.md)
  up to the fiducial cross-section ratio, which the files carry as attributes.
So a method with H nominal heads trains (H + 2 S) x members networks, S = shape systematics (0 without
variations); for the parametrised methods that is heads x (1 + 2 S) x members.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core.errors import InputError
from sbi_core.ml.options import KNOWN_METHODS, SHAPE_KINDS

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

FORMAT_NAME = "sbi-training-set"
FORMAT_VERSION = 1
MANIFEST_FORMAT = "sbi-training-samples"
SPLITS = ("train", "val", "test")
NOMINAL = "nominal"
THETA_HEAD = "theta"
SCORE_HEAD = "score"
PARAMETRIZED_METHODS = ("carl", "rolr", "rascal", "alice", "alices")
LOCAL_METHODS = ("sally",)
BENCHMARK_METHODS = ("benchmark_ratio",)
_STR = "S256"
_ID = re.compile(r"^(?P<method>[a-z_]+)-(?P<head>[A-Za-z0-9_]+)-(?P<variation>[A-Za-z0-9_]+)-m(?P<member>\d{2,})$")


# ---------------------------------------------------------------------------------------------- network ids
@dataclass(frozen=True)
class NetworkSpec:
    """One network: which method, head and variation it learns, and its member index in the ensemble."""

    method: str
    head: str
    variation: str
    member: int

    def __post_init__(self) -> None:
        label = f"{self.method}-{self.head}-{self.variation}-m{self.member}"
        if self.method not in KNOWN_METHODS:
            raise InputError(f"network {label!r}: unknown method {self.method!r} (known: {list(KNOWN_METHODS)})")
        for name in ("head", "variation"):
            if not re.fullmatch(r"[A-Za-z0-9_]+", getattr(self, name)):
                raise InputError(f"network {label!r}: {name} must be letters, digits and _")
        if isinstance(self.member, bool) or not isinstance(self.member, int) or not 0 <= self.member < 1000:
            raise InputError(f"network {label!r}: member must be an int in 0..999, got {self.member!r}")

    @property
    def id(self) -> str:
        return f"{self.method}-{self.head}-{self.variation}-m{self.member:02d}"

    @property
    def is_variation(self) -> bool:
        """True for a per-variation network (nu_k = +-1 against nominal at the reference)."""
        return self.variation != NOMINAL

    @property
    def sample(self) -> SampleSpec:
        """The set of samples this network trains on."""
        return SampleSpec(self.method, self.head, self.variation)


def network_id(method: str, head: str, variation: str, member: int) -> str:
    """`<method>-<head>-<variation>-m<member:02d>`, e.g. `alices-theta-nominal-m00`."""
    return NetworkSpec(method, head, variation, member).id


def parse_network_id(network: str) -> NetworkSpec:
    """The NetworkSpec of an id written by `network_id`; InputError naming the id otherwise."""
    m = _ID.fullmatch(network)
    if not m:
        raise InputError(f"network id {network!r} is malformed: expected <method>-<head>-<variation>-mNN, "
                         "e.g. alices-theta-nominal-m00")
    return NetworkSpec(m["method"], m["head"], m["variation"], int(m["member"]))


# ---------------------------------------------------------------------------------------------- sample sets
@dataclass(frozen=True)
class SampleSpec:
    """One (method, head, variation): the train/val/test files the members of one ensemble share."""

    method: str
    head: str
    variation: str

    @property
    def is_variation(self) -> bool:
        return self.variation != NOMINAL

    def network_ids(self, members: int) -> list[str]:
        return [network_id(self.method, self.head, self.variation, m) for m in range(members)]


def shape_variations(cfg: AnalysisConfig) -> list[tuple[str, str, int]]:
    """(variation name, nuisance name, direction +1/-1) for every shape systematic, config order, up first."""
    out = []
    for nu in cfg.nuisance:
        if str(nu.kind) in SHAPE_KINDS:
            out += [(f"{nu.name}_up", nu.name, +1), (f"{nu.name}_down", nu.name, -1)]
    return out


def method_heads(method: str, cfg: AnalysisConfig) -> list[str]:
    """The nominal heads of a method (see the module docstring)."""
    if method in PARAMETRIZED_METHODS:
        return [THETA_HEAD]
    if method in LOCAL_METHODS:
        return [SCORE_HEAD]
    if method in BENCHMARK_METHODS:
        return [b for b in cfg.benchmark_names if b != cfg.sampling_benchmark]
    raise InputError(f"unknown method {method!r} (known: {list(KNOWN_METHODS)})")


def sample_specs(method: str, cfg: AnalysisConfig) -> list[SampleSpec]:
    """Every set a method trains: its nominal heads, then (ratio methods, training.variations) the
    per-variation sets at the reference benchmark."""
    specs = [SampleSpec(method, h, NOMINAL) for h in method_heads(method, cfg)]
    if cfg.training.variations and method not in LOCAL_METHODS:
        specs += [SampleSpec(method, cfg.sampling_benchmark, v) for v, _, _ in shape_variations(cfg)]
    return specs


# ---------------------------------------------------------------------------------------------- the files
@dataclass(frozen=True)
class TrainingSet:
    """One split of one sample set. Rows are samples; every array is checked (float32, int64 for event).

    x (n, O) observables; theta0, theta1 (n, P); y (n,) 0 or 1; log_r_xz (n,); t_xz (n, P); event (n,) the
    row of each sample in the run's events file (samples repeat events: unweighting draws with replacement).
    has_joint_ratio / has_joint_score say whether log_r_xz / t_xz were computable (they are NaN where not:
    a variation whose observables move has no joint ratio from weights). `attrs`: free provenance (numbers
    and strings), e.g. the fiducial cross sections at theta0 and theta1.
    """

    x: np.ndarray
    theta0: np.ndarray
    theta1: np.ndarray
    y: np.ndarray
    log_r_xz: np.ndarray
    t_xz: np.ndarray
    event: np.ndarray
    method: str
    head: str
    variation: str
    split: str
    seed: int
    config_hash: str
    observables: tuple[str, ...]
    parameters: tuple[str, ...]
    has_joint_ratio: bool = True
    has_joint_score: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, o, p = self.y.shape[0] if self.y.ndim == 1 else -1, len(self.observables), len(self.parameters)
        expected = {
            "x": ((n, o), np.float32),
            "theta0": ((n, p), np.float32),
            "theta1": ((n, p), np.float32),
            "y": ((n,), np.float32),
            "log_r_xz": ((n,), np.float32),
            "t_xz": ((n, p), np.float32),
            "event": ((n,), np.int64),
        }
        for name, (shape, dtype) in expected.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"TrainingSet.{name}: expected {np.dtype(dtype).name} {shape}, got {got}")
        if self.split not in SPLITS:
            raise ValueError(f"TrainingSet.split: expected one of {SPLITS}, got {self.split!r}")
        if self.method not in KNOWN_METHODS:
            raise ValueError(f"TrainingSet.method: unknown {self.method!r}")
        if not np.all((self.y == 0) | (self.y == 1)):
            raise ValueError("TrainingSet.y: labels must be 0 or 1")
        for name in ("x", "theta0", "theta1"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"TrainingSet.{name}: values must be finite")
        for name, flag in (("log_r_xz", self.has_joint_ratio), ("t_xz", self.has_joint_score)):
            arr = getattr(self, name)
            if flag and not np.all(np.isfinite(arr)):
                raise ValueError(f"TrainingSet.{name}: values must be finite (has_{name} is set)")
            if not flag and not np.all(np.isnan(arr)):
                raise ValueError(f"TrainingSet.{name}: must be NaN when it is marked unavailable")
        if np.any(self.event < 0):
            raise ValueError("TrainingSet.event: row indices must be >= 0")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def spec(self) -> SampleSpec:
        return SampleSpec(self.method, self.head, self.variation)


_ARRAYS = ("x", "theta0", "theta1", "y", "log_r_xz", "t_xz", "event")
_NAMES = ("method", "head", "variation", "split", "config_hash")


def _ascii(names: tuple[str, ...]) -> np.ndarray:
    return np.array([n.encode("ascii") for n in names], dtype=_STR)


def write_training_set(path: Path | str, ts: TrainingSet) -> None:
    """Write one split to a new local HDF5 file (wrap in storage.atomic_write for a URI). Same content, same bytes."""
    import h5py

    with h5py.File(path, "w", libver=("v110", "v110"), track_order=False) as f:
        for name in _ARRAYS:
            arr = getattr(ts, name)
            f.create_dataset(name, data=arr, track_times=False, fletcher32=True,
                             chunks=(max(1, min(65536, arr.shape[0])), *arr.shape[1:]))
        f.create_dataset("observables/names", data=_ascii(ts.observables), track_times=False)
        f.create_dataset("parameters/names", data=_ascii(ts.parameters), track_times=False)
        a = f.attrs
        a["format"], a["format_version"] = FORMAT_NAME, FORMAT_VERSION
        for name in _NAMES:
            a[name] = getattr(ts, name)
        a["seed"] = int(ts.seed)
        a["n_samples"] = len(ts)
        a["has_joint_ratio"], a["has_joint_score"] = bool(ts.has_joint_ratio), bool(ts.has_joint_score)
        for key, value in sorted(ts.attrs.items()):
            if not isinstance(value, bool | int | float | str):
                raise ValueError(f"TrainingSet.attrs[{key!r}]: only numbers and strings, got {type(value).__name__}")
            a[f"meta_{key}"] = value


def read_training_set(path: Path | str, *, where: str | None = None) -> TrainingSet:
    """Read a file written by write_training_set; InputError naming the file when it is not one."""
    import h5py

    where = where or str(path)
    try:
        with h5py.File(path, "r") as f:
            a = dict(f.attrs)
            if a.get("format") != FORMAT_NAME:
                raise InputError(f"{where}: not an {FORMAT_NAME} file (format attribute {a.get('format')!r})")
            if int(a.get("format_version", -1)) != FORMAT_VERSION:
                raise InputError(f"{where}: format_version {a.get('format_version')} != {FORMAT_VERSION}")
            arrays = {name: f[name][()] for name in _ARRAYS}
            names = {
                "observables": tuple(b.decode("ascii") for b in f["observables/names"][()]),
                "parameters": tuple(b.decode("ascii") for b in f["parameters/names"][()]),
            }
    except InputError:
        raise
    except (OSError, KeyError) as exc:
        raise InputError(f"{where}: unreadable training set ({exc})") from None
    try:
        return TrainingSet(
            **arrays, **names, **{k: str(a[k]) for k in _NAMES}, seed=int(a["seed"]),
            has_joint_ratio=bool(a["has_joint_ratio"]), has_joint_score=bool(a["has_joint_score"]),
            attrs={k.removeprefix("meta_"): _plain(v) for k, v in a.items() if k.startswith("meta_")},
        )
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


def _plain(value: Any) -> Any:
    """numpy scalars from h5py attributes as Python numbers (so attrs compare and serialise plainly)."""
    return value.item() if isinstance(value, np.generic) else value
