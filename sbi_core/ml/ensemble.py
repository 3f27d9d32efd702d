"""Ensembles: the trained members of one (method, head, variation), evaluated together.

`sbi-core ensemble --run RUN` (`build_ensembles`) reads every planned network's result.json, groups members
by (method, head, variation), writes `RUN/ensembles/<method>/<head>/<variation>.json` (members ok, failed
ones with their errors) and `RUN/ensembles/index.json` (usable ensembles, evaluate batching). It fails
(EnsembleFailed, exit 1) naming every group with fewer than `training.min_members` successful members,
and otherwise succeeds, naming the failed networks.

Public API (the evaluation and inference stages use exactly this):
- `list_ensembles(layout) -> [(method, head, variation)]`
- `load_ensemble(layout, method, head, variation="nominal") -> Ensemble`
- `Ensemble.log_ratio(x, theta0=None) -> (mean (n,), std (n,))`: log r over the members, float64; theta0
  (n, P) or (P,) (the same theta for every event) for parametrised methods, None for x-only networks
  (benchmark_ratio, every per-variation network);
- `Ensemble.score(x, theta0=None) -> (mean (n, P), std (n, P))`: SALLY's output, or grad_theta0 log r of a
  parametrised ratio (autograd);
- `Ensemble.member_log_ratio(x, theta0=None) -> (members, n)`: every member's log r (the disagreement);
- `Ensemble.member(m) -> Ensemble`: member m alone (a bootstrap replica: the method uncertainty's fits);
- `Ensemble.members`: the member network ids.
std is the standard deviation over members (ddof = 1; zeros for a single member).
- `evaluate_batch_slice(n_rows, n_batches, batch)`: the rows of batch i when a test set is split in
  n_batches (what `evaluate --batch I` evaluates).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout

#: Test-set rows per mapped evaluate task.
EVALUATE_BATCH_ROWS = 50_000
#: Rows per forward pass when an ensemble evaluates events (bounds memory for any n).
FORWARD_ROWS = 65_536
ENSEMBLE_FORMAT = "sbi-ensemble"


def evaluate_batch_slice(n_rows: int, n_batches: int, batch: int) -> slice:
    """Rows [start, stop) of batch `batch` of `n_batches` near-equal batches of n_rows rows."""
    if not 0 <= batch < n_batches:
        raise InputError(f"evaluate batch {batch} is out of range: the run has {n_batches} batches (0..{n_batches - 1})")
    return slice(n_rows * batch // n_batches, n_rows * (batch + 1) // n_batches)


# ---------------------------------------------------------------------------------------------- the step
def build_ensembles(run_uri: str) -> dict[str, Any]:
    """Group every planned network's result into ensembles; EnsembleFailed if one has too few members."""
    from sbi_core import runs
    from sbi_core.data.training_sets import parse_network_id
    from sbi_core.ml.errors import EnsembleFailed
    from sbi_core.ml.plan import training_plan

    t0 = time.perf_counter()
    layout, cfg, _ = runs.load_run(run_uri)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for ids in training_plan(cfg)["networks"].values():
        for nid in ids:
            spec = parse_network_id(nid)
            groups.setdefault((spec.method, spec.head, spec.variation), []).append(nid)
    min_members = cfg.training.min_members
    too_few: dict[str, str] = {}
    failed_networks: dict[str, str] = {}
    usable: list[dict[str, Any]] = []
    for (method, head, variation), ids in groups.items():
        ok, failed, val_losses = [], {}, []
        for nid in ids:
            result, why = _member(layout, nid)
            if result is None:
                failed[nid] = why
            else:
                ok.append(nid)
                val_losses.append(float(result["best_val_loss"]))
        status = "ok" if len(ok) >= min_members else "failed"
        record = {"format": ENSEMBLE_FORMAT, "method": method, "head": head, "variation": variation,
                  "status": status, "members": ok, "failed": failed, "min_members": min_members,
                  "best_val_loss": {nid: v for nid, v in zip(ok, val_losses, strict=True)}}
        storage.write_json(layout.ensemble(method, head, variation), record)
        failed_networks.update(failed)
        name = f"{method}/{head}/{variation}"
        if status == "ok":
            usable.append({"method": method, "head": head, "variation": variation, "members": len(ok),
                           "uri": layout.ensemble(method, head, variation)})
        else:
            too_few[name] = f"{len(ok)} of {len(ids)} members trained, min_members is {min_members}"
    n_test = _largest_test_set(layout, [(u["method"], u["head"], u["variation"]) for u in usable], cfg)
    n_batches = max(1, math.ceil(n_test / EVALUATE_BATCH_ROWS))
    storage.write_json(layout.ensembles_index, {
        "format": ENSEMBLE_FORMAT, "ensembles": usable, "failed_ensembles": too_few,
        "failed_networks": failed_networks, "evaluate_batches": n_batches, "test_rows": n_test,
        "evaluate_batch_rows": EVALUATE_BATCH_ROWS,
    })
    if too_few:
        raise EnsembleFailed(too_few)
    return {
        "step": "ensemble",
        "run": layout.root,
        "ensembles": [f"{u['method']}/{u['head']}/{u['variation']}" for u in usable],
        "n_ensembles": len(usable),
        "failed_networks": sorted(failed_networks),
        "index": layout.ensembles_index,
        "evaluate_batches": [str(i) for i in range(n_batches)],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _member(layout: RunLayout, nid: str) -> tuple[dict[str, Any] | None, str]:
    """(result, "") for a trained member whose model file is the one its result.json records, else (None, why)."""
    from sbi_core.ml.model_io import model_file_problem

    uri = layout.network_file(nid, "result.json")
    if not storage.exists(uri):
        return None, "no result.json: never trained, or its train task is still running or was killed"
    try:
        result = storage.read_json(uri)
    except ValueError:
        return None, f"{uri} is not valid JSON: retrain the network (sbi-core train --network {nid})"
    if not isinstance(result, dict) or result.get("status") != "ok":
        error = result.get("error") if isinstance(result, dict) else f"{uri} is not a result record"
        return None, str(error or "failed")
    problem = model_file_problem(layout.network_file(nid, "model.pt"), result)
    if problem:
        return None, f"{problem}: retrain it (sbi-core train --network {nid} repairs it)"
    return result, ""


def _largest_test_set(layout: RunLayout, keys: list[tuple[str, str, str]], cfg: Any) -> int:
    """Rows of the largest test split among the ensembles' sample sets (the config's size if none is found)."""
    import h5py

    largest = 0
    for key in keys:
        uri = layout.training_set(*key, "test")
        if not storage.exists(uri):
            continue
        with storage.open_for_inspection(uri) as src, h5py.File(src, "r") as f:
            largest = max(largest, int(f.attrs.get("n_samples", 0)))
    return largest or int(cfg.training.samples.test)


# ---------------------------------------------------------------------------------------------- reading
def list_ensembles(layout: RunLayout) -> list[tuple[str, str, str]]:
    """(method, head, variation) of every usable ensemble of the run (after `sbi-core ensemble`)."""
    if not storage.exists(layout.ensembles_index):
        raise InputError(f"run {layout.root} has no ensembles ({layout.ensembles_index} is missing): "
                         "run `sbi-core ensemble` first")
    index = storage.read_json(layout.ensembles_index)
    return [(e["method"], e["head"], e["variation"]) for e in index["ensembles"]]


def load_ensemble(layout: RunLayout, method: str, head: str, variation: str = "nominal") -> Ensemble:
    """The ensemble's successful members, loaded on the CPU; InputError naming what is missing."""
    from sbi_core.ml.model_io import load_model

    uri = layout.ensemble(method, head, variation)
    if not storage.exists(uri):
        raise InputError(f"no ensemble {method}/{head}/{variation} in run {layout.root} ({uri} is missing): "
                         "run `sbi-core ensemble` first, or check the method, head and variation")
    record = storage.read_json(uri)
    if record.get("status") != "ok" or not record.get("members"):
        raise InputError(f"ensemble {method}/{head}/{variation} has too few members ({record.get('failed')})")
    loaded = [load_model(layout.network_file(nid, "model.pt")) for nid in record["members"]]
    return Ensemble(method, head, variation, list(record["members"]), [m for m, _ in loaded],
                    [i for _, i in loaded])


@dataclass
class Ensemble:
    """Members of one (method, head, variation); see the module docstring for the evaluation API."""

    method: str
    head: str
    variation: str
    members: list[str]
    models: list[Any]
    infos: list[Any]

    def __post_init__(self) -> None:
        if not self.models or len(self.models) != len(self.members):
            raise ValueError("Ensemble: one model per member, at least one")
        kinds = {(i.parametrised, i.output) for i in self.infos}
        if len(kinds) != 1:
            raise InputError(f"ensemble {self.name}: members disagree on inputs or output ({sorted(kinds)})")
        self.parametrised, self.output = kinds.pop()
        arch = self.models[0].architecture
        self.n_x, self.n_params = int(arch["n_x"]), int(arch["n_theta"] if self.parametrised else arch["n_out"])

    @property
    def name(self) -> str:
        return f"{self.method}/{self.head}/{self.variation}"

    def member(self, m: int) -> Ensemble:
        """The ensemble of member m alone (a bootstrap replica: only its network runs); InputError when absent."""
        if not 0 <= m < len(self.members):
            raise InputError(f"ensemble {self.name} has {len(self.members)} members, member {m} was asked for")
        return replace(self, members=self.members[m : m + 1], models=self.models[m : m + 1],
                       infos=self.infos[m : m + 1])

    def _inputs(self, x: np.ndarray, theta0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != self.n_x:
            raise ValueError(f"ensemble {self.name}: x must have shape (n, {self.n_x}), got {xa.shape}")
        if not self.parametrised:
            if theta0 is not None:
                raise ValueError(f"ensemble {self.name} takes x only (theta enters through morphing): pass "
                                 "theta0=None")
            return xa, None
        if theta0 is None:
            raise ValueError(f"ensemble {self.name} is parametrised: pass theta0, shape (n, P) or (P,)")
        t = np.asarray(theta0, dtype=np.float64)
        if t.shape == (self.n_params,):
            t = np.broadcast_to(t, (xa.shape[0], self.n_params))
        elif t.shape != (xa.shape[0], self.n_params):
            raise ValueError(f"ensemble {self.name}: theta0 must have shape ({xa.shape[0]}, {self.n_params}) or "
                             f"({self.n_params},), got {t.shape}")
        return xa, t

    def _per_member(self, x: np.ndarray, theta0: np.ndarray | None, what: str) -> np.ndarray:
        """(members, n) log r or (members, n, P) score, float64, in bounded chunks."""
        import torch

        xa, t = self._inputs(x, theta0)
        n = xa.shape[0]
        width = 1 if what == "log_ratio" else self.n_params
        out = np.empty((len(self.models), n, width), dtype=np.float64)
        for start in range(0, n, FORWARD_ROWS):
            stop = min(n, start + FORWARD_ROWS)
            xs = torch.from_numpy(np.ascontiguousarray(xa[start:stop], dtype=np.float32))
            ts = None if t is None else torch.from_numpy(np.ascontiguousarray(t[start:stop], dtype=np.float32))
            for m, model in enumerate(self.models):
                if what == "log_ratio" or self.output == "score":
                    with torch.no_grad():
                        val = model(xs, ts)
                else:
                    with torch.enable_grad():
                        th = ts.clone().requires_grad_(True)
                        (val,) = torch.autograd.grad(model(xs, th)[:, 0].sum(), th)
                out[m, start:stop] = val.detach().double().numpy()
        return out if width > 1 or what == "score" else out[..., 0]

    @staticmethod
    def _reduce(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
        return mean, std

    def log_ratio(self, x: np.ndarray, theta0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean (n,) and std (n,) over members of log r(x|theta0, theta1) (see the module docstring)."""
        if self.output != "log_ratio":
            raise ValueError(f"ensemble {self.name} estimates a score, not a likelihood ratio")
        return self._reduce(self._per_member(x, theta0, "log_ratio"))

    def member_log_ratio(self, x: np.ndarray, theta0: np.ndarray | None = None) -> np.ndarray:
        """(members, n) log r of each member (what the mean and std of `log_ratio` reduce)."""
        if self.output != "log_ratio":
            raise ValueError(f"ensemble {self.name} estimates a score, not a likelihood ratio")
        return self._per_member(x, theta0, "log_ratio")

    def score(self, x: np.ndarray, theta0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean (n, P) and std (n, P) over members of the score t(x|theta0)."""
        if self.output != "score" and not self.parametrised:
            raise ValueError(f"ensemble {self.name} learns a ratio of x alone: it has no score in theta")
        return self._reduce(self._per_member(x, theta0, "score"))
