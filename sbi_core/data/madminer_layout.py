"""What our event files hold for MadMiner 0.9.6's readers, and what MadMiner's format cannot carry.

`sbi_core.data.format` writes the header groups MadMiner reads (`load_madminer_settings`: parameters,
benchmarks, morphing, observables, nuisance parameters, systematics, the sample summary) with the pieces this
module builds from the config; `sbi_core.data.madminer_import` reads MadMiner's own files. Documented in
docs/data-format.md ("MadMiner").

What to use when:
- `observable_definitions(cfg)`: per observable, a MadMiner expression (physics.observables) or MadMiner's own
  marker for an observable it cannot recompute, "None";
- `write_sample_summary(f)`: `samples/sampling_benchmarks` and `sample_summary/*`, at seal time;
- `madminer_gaps(kinds, definitions)`: what a file with these nuisance kinds and observables loses in MadMiner
  (logged as a warning whenever an event file is sealed).

MadMiner applies every nuisance parameter through the weights of its +1/-1 benchmarks (`NuisanceMorpher`:
w(nu)/w(0) = exp(a nu + b nu^2) per event, from `nuisance_parameters/*`): normalisation and weight-type shape
nuisances are exact there; nuisances that move observables are written as their per-event density ratio at the
same x (a reweighting), which loses the events that migrate across the cuts and the moved observables
themselves. The `systematics/*` group is not written: MadMiner 0.9.6 reads back systematics of type `scale`
only (for `norm` and `pdf` its loader passes None to `SystematicScale.from_str`, which raises), and ours are
not generator scale variations; each nuisance names itself as its systematic, and its kind and size are in
`nuisance_parameters/kinds` and `sizes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h5py
import numpy as np

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = ["EMPTY_EXPR", "madminer_gaps", "observable_definitions", "write_sample_summary"]

#: MadMiner's expression for "no expression" (it writes it for observables defined by Python callables).
EMPTY_EXPR = "None"
#: Nuisance kinds that move observables: MadMiner gets them as a per-event reweighting only.
MOVES_OBSERVABLES = ("observable_scale", "observable_resolution")


def observable_definitions(cfg: AnalysisConfig) -> list[str]:
    """Per observable (config order): its MadMiner expression (a run imported from MadMiner keeps the file's own,
    `simulator.options.definitions`), or EMPTY_EXPR when it has none."""
    from sbi_core.physics.observables import madminer_expression

    imported = cfg.simulator.options.get("definitions", {}) if cfg.simulator.name == "madminer" else {}
    return [imported.get(o.name) or madminer_expression(o.name) or EMPTY_EXPR for o in cfg.observables]


def madminer_gaps(kinds: list[str], names: list[str], definitions: list[str]) -> list[str]:
    """What MadMiner cannot use of a file with these nuisance kinds (name order) and observable definitions."""
    gaps = []
    moved = [n for n, k in zip(names, kinds, strict=True) if k in MOVES_OBSERVABLES]
    if moved:
        gaps.append(f"nuisance parameters {moved} move observables: MadMiner gets them as a per-event reweighting "
                    "of the nominal observables (the weights of their +-1 benchmarks), without the events that "
                    "migrate across the cuts")
    return gaps + _observable_gap(definitions)


def _observable_gap(definitions: list[str]) -> list[str]:
    if EMPTY_EXPR in definitions:
        return [f"{definitions.count(EMPTY_EXPR)} observable(s) have no MadMiner expression (definition "
                f"{EMPTY_EXPR!r}, as MadMiner writes for a Python function): their values are in the file, but "
                "MadMiner's LHE and Delphes readers cannot recompute them"]
    return []


def write_sample_summary(f: h5py.File, n_events: int, sampling_benchmark: str) -> None:
    """MadMiner's per-event sampling benchmark and its event counts: every event of our files is drawn at (or
    reweighted to) the sampling benchmark and its weights sum to the cross section already, so MadMiner's
    sampling factor n_b / n is 1. Overwrites a summary a copied header brought along."""
    names = [b.decode("ascii") for b in f["benchmarks/names"][()]]
    physics = int(np.count_nonzero(~f["benchmarks/is_nuisance"][()]))
    index = names.index(sampling_benchmark)
    counts = np.zeros(physics, dtype=np.int64)
    counts[index] = n_events
    if "samples/sampling_benchmarks" not in f:
        chunks = (min(max(n_events, 1), 65536),)
        # every value is the fill value: HDF5 stores no chunk for it, and reads return it
        f.create_dataset("samples/sampling_benchmarks", shape=(n_events,), dtype=np.int64, chunks=chunks,
                         compression="gzip", compression_opts=1, track_times=False, fillvalue=index)
    for key, value in (("sample_summary/signal_events", counts),
                       ("sample_summary/background_events", np.int64(0))):
        if key in f:
            del f[key]
        f.create_dataset(key, data=value, track_times=False)
