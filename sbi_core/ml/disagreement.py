"""How much an ensemble's members disagree on log r at a parameter point: where the learned likelihood is least
certain, what the active-learning `disagreement` objective evaluates at each point it asks.

    D(theta) = sqrt( sum_i w_i s_i(theta)^2 / sum_i w_i )

s_i(theta) is the standard deviation over the members of log r(x_i|theta, theta_ref) at event i of the evaluation
sample. `weighting="events"` (the default): w_i = 1, the spread over the run's own (test-split) events, the same
events the closure RMS of the learning stage is computed on, so D is a proxy of that RMS at theta (and of the
likelihood's error on data like the run's); `weighting="theta"`: w_i the event's weight at theta (its basis
weights morphed to theta, negative ones as 0), the spread averaged over p(x|theta, cuts). A parametrised ensemble (alices, rascal, ...) is evaluated at theta
directly; the benchmark_ratio ensembles are morphed to theta member by member (member m of every head: its
morphed log r, `closure.morphed_log_ratio`).

What to use when: `trained_ensemble(layout, cfg, method, head)` for the trained members of a run (no ensemble
files needed); `DisagreementSample.from_run(layout, cfg, plan, n)` once (the first n test-split events of the
run's events file: never trained on, the same for every round of a study on the same events), then
`disagreement(layout, cfg, method, thetas, sample)` for a batch of points (`disagreement_and_mean` with the
ensemble's log r at them too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.layout import RunLayout
    from sbi_core.plan import GenerationPlan

__all__ = ["DisagreementSample", "disagreement", "trained_ensemble"]

#: How the events' spreads are averaged (see the module docstring).
WEIGHTINGS = ("events", "theta")
#: Events of the evaluation sample (test split of the run's events).
SAMPLE_EVENTS = 20_000


@dataclass(frozen=True)
class DisagreementSample:
    """Events the disagreement is averaged over: observations (n, O), basis weights (n, B), the morphing."""

    x: np.ndarray
    basis_weights: np.ndarray
    morphing: Any

    @classmethod
    def from_run(cls, layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan,
                 n: int = SAMPLE_EVENTS) -> DisagreementSample:
        """The first n test-split events of the run's events file (`samples.event_split`)."""
        import h5py

        from sbi_core import runs
        from sbi_core.data.format import OBSERVATIONS, WEIGHTS
        from sbi_core.ml.samples import event_split
        from sbi_core.physics.morphing import Morphing
        from sbi_core.physics.registry import make_simulator

        uri = runs.run_events(layout, plan)
        if not storage.exists(uri):
            raise InputError(f"run {layout.root} has no events file {uri}: run combine --all first")
        nb = len(cfg.benchmarks)
        xs, ws, have = [], [], 0
        rows = cfg.training.samples.chunk_rows
        with storage.local_copy(uri) as path, h5py.File(path, "r") as f:
            total = int(f[OBSERVATIONS].shape[0])
            for start in range(0, total, rows):
                stop = min(total, start + rows)
                keep = np.flatnonzero(event_split(cfg, np.arange(start, stop)) == 2)[: n - have]
                xs.append(f[OBSERVATIONS][start:stop][keep])
                ws.append(f[WEIGHTS][start:stop, :nb][keep])
                have += keep.size
                if have >= n:
                    break
        if not have:
            raise InputError(f"{uri}: no test-split event to evaluate the disagreement on")
        morphing = Morphing(make_simulator(cfg).morphing_powers, np.asarray(cfg.benchmark_matrix(), dtype=np.float64))
        return cls(np.concatenate(xs).astype(np.float64), np.concatenate(ws), morphing)

    def weights_at(self, theta: np.ndarray) -> np.ndarray:
        """(n,) the events' weights at theta, negative morphed weights as 0."""
        return np.maximum(self.basis_weights @ self.morphing.basis_coefficients(theta), 0.0)


def trained_ensemble(layout: RunLayout, cfg: AnalysisConfig, method: str, head: str,
                     variation: str = "nominal") -> Any:
    """The members of (method, head, variation) whose result.json says ok, as an `Ensemble`, read from the
    networks' own files (no `sbi-core ensemble` needed, nothing written: mapped tasks may call it at once)."""
    from sbi_core.data.training_sets import SampleSpec
    from sbi_core.ml.ensemble import Ensemble
    from sbi_core.ml.model_io import load_model

    ids = SampleSpec(method, head, variation).network_ids(cfg.training.members)
    ok = [nid for nid in ids if storage.exists(layout.network_file(nid, "result.json"))
          and storage.read_json(layout.network_file(nid, "result.json")).get("status") == "ok"]
    if not ok:
        raise InputError(f"run {layout.root} has no trained member of {method}/{head}/{variation} ({ids})")
    loaded = [load_model(layout.network_file(nid, "model.pt")) for nid in ok]
    return Ensemble(method, head, variation, ok, [m for m, _ in loaded], [i for _, i in loaded])


def _members_log_ratio(layout: RunLayout, cfg: AnalysisConfig, method: str, x: np.ndarray,
                       thetas: np.ndarray, sample: DisagreementSample) -> tuple[np.ndarray, np.ndarray]:
    """((points, members, n) log r of every member at every point, (points, n) the ensemble's log r there): for a
    parametrised method the members' mean; for benchmark_ratio each head's mean over its members, morphed."""
    from sbi_core.ml.closure import morphed_log_ratio

    if method == "benchmark_ratio":
        names = cfg.benchmark_names
        ref = names.index(cfg.sampling_benchmark)
        heads = {b: trained_ensemble(layout, cfg, method, name).member_log_ratio(x)
                 for b, name in enumerate(names) if b != ref}
        members = min(len(v) for v in heads.values())
        sigma = sample.basis_weights.sum(axis=0)

        def morphed(columns: dict[int, np.ndarray], theta: np.ndarray) -> np.ndarray:
            lr = np.zeros((x.shape[0], len(names)))
            for b, values in columns.items():
                lr[:, b] = values
            return morphed_log_ratio(lr, sample.morphing.basis_coefficients(theta), sigma)

        out = np.stack([np.stack([morphed({b: v[m] for b, v in heads.items()}, theta) for m in range(members)])
                        for theta in thetas])
        head_mean = {b: v.mean(axis=0) for b, v in heads.items()}
        return out, np.stack([morphed(head_mean, theta) for theta in thetas])
    ens = trained_ensemble(layout, cfg, method, "theta")
    if not ens.parametrised:
        raise InputError(f"disagreement: method {method!r} is not parametrised in theta (use a parametrised method "
                         "or benchmark_ratio)")
    out = np.stack([ens.member_log_ratio(x, theta) for theta in thetas])
    return out, out.mean(axis=1)


def disagreement(layout: RunLayout, cfg: AnalysisConfig, method: str, thetas: np.ndarray,
                 sample: DisagreementSample, weighting: str = "events") -> list[dict[str, float]]:
    """D(theta) per point (see the module docstring), with the mean spread and the events' total weight at theta.
    InputError when the ensemble has a single member (no spread) or a point has no positive weight."""
    return disagreement_and_mean(layout, cfg, method, thetas, sample, weighting)[0]


def disagreement_and_mean(layout: RunLayout, cfg: AnalysisConfig, method: str, thetas: np.ndarray,
                          sample: DisagreementSample, weighting: str = "events"
                          ) -> tuple[list[dict[str, float]], np.ndarray]:
    """`disagreement`, and the ensemble's log r (points, n) over the sample's events from the same evaluation of
    the members (what a closure RMS at the points compares with the exact log r)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    t = np.atleast_2d(np.asarray(thetas, dtype=np.float64))
    if t.shape[1] != len(cfg.parameters):
        raise ValueError(f"thetas: expected (k, {len(cfg.parameters)}), got {t.shape}")
    values, mean = _members_log_ratio(layout, cfg, method, sample.x, t, sample)
    if values.shape[1] < 2:
        raise InputError(f"disagreement of {method}: the ensemble has {values.shape[1]} member; it needs at least 2 "
                         "(training.members)")
    spread = values.std(axis=1, ddof=1)  # (points, n)
    out = []
    for k, theta in enumerate(t):
        w = sample.weights_at(theta) if weighting == "theta" else np.ones(sample.x.shape[0])
        if not w.sum() > 0:
            raise InputError(f"disagreement at {theta.tolist()}: no event has a positive weight there")
        out.append({"disagreement": float(np.sqrt(np.sum(w * spread[k] ** 2) / w.sum())),
                    "mean_spread": float(np.sum(w * spread[k]) / w.sum()), "weight": float(w.sum())})
    return out, mean
