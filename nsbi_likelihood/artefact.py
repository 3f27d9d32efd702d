"""Loading an artefact (`load`) and the `Likelihood` it describes. The format: docs/likelihood-format.md."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nsbi_likelihood.errors import FormatError
from nsbi_likelihood.fit import FitResult, fd_grad, fd_hessian, newton
from nsbi_likelihood.model import SCHEMES, Model
from nsbi_likelihood.networks import check_network, forward

__all__ = ["DESCRIPTION", "FORMAT_NAME", "SUPPORTED_VERSIONS", "Likelihood", "load"]

FORMAT_NAME = "nsbi-likelihood"
SUPPORTED_VERSIONS = (1,)
DESCRIPTION = "likelihood.json"
REQUIRED = ("format", "format_version", "parameters", "samples", "columns", "reference", "morphing", "nuisance",
            "xsec", "luminosity", "normalization", "observables", "cuts", "datasets", "networks", "fit",
            "provenance", "files")
_EVENT_ARRAYS = ("log_ratio", "log_ratio_var", "weight")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unpack(archive: Path, out: Path) -> Path:
    """Extract a .tar.gz into `out` (plain files and folders only, nothing outside it); the artefact's folder."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise FormatError(f"{archive}: refusing archive member {member.name!r}")
        tar.extractall(out, filter="data")
    tops = [p for p in out.iterdir()]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else out


def _description(root: Path) -> dict[str, Any]:
    path = root / DESCRIPTION
    if not path.is_file():
        raise FormatError(f"{root}: no {DESCRIPTION}: not an {FORMAT_NAME} artefact")
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT_NAME:
        got = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        raise FormatError(f"{path}: format {got!r} is not {FORMAT_NAME!r}")
    if desc.get("format_version") not in SUPPORTED_VERSIONS:
        raise FormatError(f"{path}: format_version {desc.get('format_version')!r} is not supported by this reader "
                          f"(it reads {', '.join(map(str, SUPPORTED_VERSIONS))}): install a newer nsbi_likelihood")
    missing = [k for k in REQUIRED if k not in desc]
    if missing:
        raise FormatError(f"{path}: missing fields {missing}")
    _validate_schema(desc, root, path)
    return desc


def _validate_schema(desc: dict[str, Any], root: Path, path: Path) -> None:
    """Against the artefact's schema.json when the optional `jsonschema` package is installed."""
    try:
        import jsonschema
    except ImportError:
        return
    schema_path = root / "schema.json"
    if not schema_path.is_file():
        raise FormatError(f"{root}: missing schema.json")
    try:
        jsonschema.validate(desc, json.loads(schema_path.read_text()))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise FormatError(f"{path}: {where}: {exc.message}") from None


def _check_files(root: Path, files: Mapping[str, str]) -> None:
    for rel, digest in files.items():
        path = root / rel
        if not path.is_file():
            raise FormatError(f"{root}: missing file {rel}")
        if _sha256(path) != digest:
            raise FormatError(f"{root}: {rel} does not match its sha256 in {DESCRIPTION} (changed or truncated)")


def _arrays(root: Path, entry: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """One dataset's npz, every array present with its shape (n taken from the description)."""
    path = root / entry["file"]
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: np.asarray(z[k], dtype=np.float64) for k in z.files if k in _EVENT_ARRAYS}
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable arrays ({exc})") from None
    n = int(entry["n_events"])
    for name, tail in shapes.items():
        if name not in out:
            raise FormatError(f"{entry['file']}: missing array {name!r}")
        if out[name].shape != (n, *tail):
            raise FormatError(f"{entry['file']}: array {name!r} has shape {out[name].shape}, expected {(n, *tail)}")
        arr = out[name]
        bad = np.isnan(arr).any() or np.isposinf(arr).any() or (name != "log_ratio" and np.isneginf(arr).any())
        if bad:  # log_ratio may be -inf (a column with zero rate at that event), nothing else may be infinite
            raise FormatError(f"{entry['file']}: array {name!r} has NaN or infinite values")
    return out


def load(path: str | Path) -> Likelihood:
    """The artefact at `path` (a directory, or a .tar.gz of one), checked (see the module doc)."""
    src = Path(path)
    if not src.exists():
        raise FormatError(f"{src}: no such artefact")
    if src.is_dir():
        desc = _description(src)
        _check_files(src, desc["files"])
        return Likelihood(src, desc)
    with tempfile.TemporaryDirectory(prefix="nsbi-likelihood-") as tmp:  # everything is read into memory
        try:
            root = _unpack(src, Path(tmp))
        except (tarfile.TarError, OSError) as exc:
            raise FormatError(f"{src}: not a readable .tar.gz ({exc})") from None
        desc = _description(root)
        _check_files(root, desc["files"])
        return Likelihood(root, desc)


class Likelihood:
    """NLL(theta, nu) of an artefact: on its dataset, on new events, derivatives and refits."""

    def __init__(self, root: Path, desc: dict[str, Any]) -> None:
        self.root, self.description = root, desc
        self.parameters = [p["name"] for p in desc["parameters"]]
        self.nuisances = [n["name"] for n in desc["nuisance"]]
        self.names = self.parameters + self.nuisances
        self.n_pois = len(self.parameters)
        self.samples = list(desc["samples"])
        self.columns = [c["name"] for c in desc["columns"]]
        self.observables = [o["name"] for o in desc["observables"]]
        b, k, s = len(self.columns), len(self.nuisances), len(self.samples)
        owner = np.zeros((b, s))
        for i, col in enumerate(desc["columns"]):
            if col["sample"] not in self.samples:
                raise FormatError(f"{DESCRIPTION}: column {col['name']!r} names unknown sample {col['sample']!r}")
            owner[i, self.samples.index(col["sample"])] = 1.0
        schemes = tuple(n["interpolation"] for n in desc["nuisance"])
        bad = [n for n, sch in zip(self.nuisances, schemes, strict=True) if sch not in SCHEMES]
        if bad:
            raise FormatError(f"{DESCRIPTION}: nuisances {bad} have an interpolation this reader does not know")
        self.model = Model(
            powers=np.asarray(desc["morphing"]["components"], dtype=np.int64).reshape(-1, self.n_pois),
            matrix=np.asarray(desc["morphing"]["matrix"], dtype=np.float64).reshape(-1, b),
            owner=owner, schemes=schemes, aux=np.array([n["aux"] for n in desc["nuisance"]], dtype=np.float64),
            luminosity=float(desc["luminosity"]), normalization=desc["normalization"],
            xsec=np.asarray(desc["xsec"]["columns"], dtype=np.float64).reshape(b),
            xsec_var=np.asarray(desc["xsec"]["variations"], dtype=np.float64).reshape(k, 2, b))
        shapes = {"log_ratio": (b,), "log_ratio_var": (k, 2, s), "weight": ()}
        self.data = _arrays(root, desc["datasets"]["data"], shapes)
        norm = desc["datasets"].get("normalization")
        if self.model.normalization == "mc" and norm is None:
            raise FormatError(f"{DESCRIPTION}: normalization mc needs datasets.normalization")
        self.norm = _arrays(root, norm, shapes) if norm is not None else None
        self._networks = self._load_networks(desc["networks"])
        self._jax: dict[str, Any] | None = None

    # ------------------------------------------------------------------ networks and new events
    def _load_networks(self, spec: Mapping[str, Any] | None) -> dict[str, dict[str, np.ndarray]]:
        nets: dict[str, dict[str, np.ndarray]] = {}
        if spec is None:
            return nets
        files = {f for e in (*spec["log_ratio"], *spec["log_ratio_var"]) for f in e["members"]}
        for rel in sorted(files):
            try:
                with np.load(self.root / rel, allow_pickle=False) as z:
                    nets[rel] = {k: z[k] for k in z.files}
            except (OSError, ValueError) as exc:
                raise FormatError(f"{rel}: unreadable network ({exc})") from None
            check_network(nets[rel], rel, len(self.observables))
        return nets

    def _events(self, x: Any, observables: Sequence[str] | None) -> np.ndarray:
        """x as (n, O) in the artefact's observable order; FormatError naming what does not match."""
        if isinstance(x, Mapping):
            missing = [o for o in self.observables if o not in x]
            extra = sorted(set(x) - set(self.observables))
            if missing or extra:
                raise FormatError(f"events: observables {sorted(x)} do not match the artefact's {self.observables}"
                                  f" (missing {missing}, unknown {extra})")
            arr = np.stack([np.asarray(x[o], dtype=np.float64) for o in self.observables], axis=1)
        else:
            arr = np.asarray(x, dtype=np.float64)
            if observables is None:
                raise FormatError(f"events: pass observables= (the names of the columns); the artefact expects "
                                  f"{self.observables}")
            if list(observables) != self.observables:
                raise FormatError(f"events: observables {list(observables)} do not match the artefact's "
                                  f"{self.observables} (names and order)")
            if arr.ndim != 2 or arr.shape[1] != len(self.observables):
                raise FormatError(f"events: expected shape (n, {len(self.observables)}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise FormatError("events: observables must be finite")
        return arr

    def per_event(self, x: Any, observables: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """log_ratio (n, B) and log_ratio_var (n, K, 2, S) of new events, from the exported networks."""
        arr = self._events(x, observables)
        spec = self.description["networks"]
        if spec is None:
            raise FormatError(f"this artefact's source is {self.description['provenance'].get('source')!r}: it has "
                              "no networks, so it evaluates its own dataset only")
        n, b, k, s = arr.shape[0], len(self.columns), len(self.nuisances), len(self.samples)
        lr, lrv = np.zeros((n, b)), np.zeros((n, k, 2, s))

        def value(entry: Mapping[str, Any]) -> np.ndarray:
            members = [forward(self._networks[f], arr) for f in entry["members"]]
            return entry["offset"] + (np.mean(members, axis=0) if members else 0.0)

        for entry in spec["log_ratio"]:
            lr[:, self.columns.index(entry["column"])] = value(entry)
        for entry in spec["log_ratio_var"]:
            j = ("up", "down").index(entry["direction"])
            lrv[:, self.nuisances.index(entry["nuisance"]), j, self.samples.index(entry["sample"])] = value(entry)
        return {"log_ratio": lr, "log_ratio_var": lrv}

    # ------------------------------------------------------------------ the NLL
    def _p(self, p: Any, theta: Any, nu: Any) -> np.ndarray:
        if p is None:
            p = np.concatenate([np.atleast_1d(np.asarray(theta, dtype=np.float64)),
                                np.atleast_1d(np.asarray(nu if nu is not None else self.model.aux, dtype=np.float64))])
        arr = np.asarray(p, dtype=np.float64)
        if arr.shape != (len(self.names),):
            raise FormatError(f"p: expected {len(self.names)} values for {self.names}, got shape {arr.shape}")
        return arr

    def dataset(self, events: Any = None, observables: Sequence[str] | None = None,
                weight: Any = None) -> dict[str, np.ndarray]:
        """The artefact's dataset (events None) or new events' arrays with their weights (default 1)."""
        if events is None:
            return self.data
        arrays = self.per_event(events, observables)
        n = arrays["log_ratio"].shape[0]
        arrays["weight"] = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64).reshape(n)
        return arrays

    def nll(self, p: Any = None, *, theta: Any = None, nu: Any = None, events: Any = None,
            observables: Sequence[str] | None = None, weight: Any = None) -> float:
        """NLL at p (or theta and nu: nu defaults to the auxiliary data) on the dataset or on `events`."""
        return float(self.model.nll(self._p(p, theta, nu), self.dataset(events, observables, weight), self.norm))

    def _jax_functions(self) -> dict[str, Any]:
        if self._jax is None:
            import jax
            import jax.numpy as jnp

            jax.config.update("jax_enable_x64", True)  # the likelihood is evaluated in float64

            def f(p: Any, data: Any, norm: Any) -> Any:
                return self.model.nll(p, data, norm, jnp)

            self._jax = {"value": jax.jit(f), "grad": jax.jit(jax.grad(f)), "hess": jax.jit(jax.hessian(f))}
        return self._jax

    def _derivative(self, kind: str, p: np.ndarray, data: dict[str, np.ndarray], backend: str) -> np.ndarray:
        if backend == "auto":
            backend = "jax" if _has_jax() else "numpy"
        if backend == "jax":
            return np.asarray(self._jax_functions()[kind](p, data, self.norm))
        if backend != "numpy":
            raise ValueError(f"backend: expected auto, numpy or jax, got {backend!r}")
        fun = lambda q: float(self.model.nll(q, data, self.norm))  # noqa: E731
        return fd_grad(fun, p) if kind == "grad" else fd_hessian(fun, p)

    def grad(self, p: Any, *, backend: str = "auto", **events: Any) -> np.ndarray:
        """dNLL/dp: exact with JAX, central differences with numpy (backend "auto" picks JAX when installed)."""
        return self._derivative("grad", self._p(p, None, None), self.dataset(**events), backend)

    def hessian(self, p: Any, *, backend: str = "auto", **events: Any) -> np.ndarray:
        """d2NLL/dp2 (as `grad`)."""
        return self._derivative("hess", self._p(p, None, None), self.dataset(**events), backend)

    def fit(self, start: Any = None, *, backend: str = "auto", **events: Any) -> FitResult:
        """The best fit by damped Newton (module `nsbi_likelihood.fit`) from `start` (default: the pipeline's
        starting point recorded in the artefact, else 0)."""
        data = self.dataset(**events)
        x0 = np.asarray(start if start is not None else self.description["fit"].get("start")
                        or np.zeros(len(self.names)), dtype=np.float64)
        fun = lambda q: float(self.model.nll(q, data, self.norm))  # noqa: E731
        return newton(fun, lambda q: self._derivative("grad", q, data, backend),
                      lambda q: self._derivative("hess", q, data, backend), x0)

    @property
    def best_fit(self) -> dict[str, float]:
        """The pipeline's best fit on the artefact's dataset (what `fit()` reproduces)."""
        return dict(self.description["fit"]["values"])

    def __repr__(self) -> str:
        return (f"Likelihood({len(self.parameters)} POIs {self.parameters}, {len(self.nuisances)} nuisances, "
                f"{self.data['weight'].size} events, normalization {self.model.normalization}, "
                f"networks {'yes' if self._networks else 'no'})")


def _has_jax() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None
