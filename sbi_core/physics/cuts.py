"""The analysis cuts applied to observed events: the one selection every simulator, generate and learning share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = ["cut_mask"]


def cut_mask(cfg: AnalysisConfig, observations: np.ndarray) -> np.ndarray:
    """True for events passing every cut (min inclusive, max exclusive) whose every observable is defined.

    A simulator with a detector returns NaN for an observable whose objects were not reconstructed (a lost
    lepton): such an event fails the selection, so event files never hold NaN."""
    mask = np.isfinite(observations).all(axis=1)
    for cut in cfg.cuts:
        col = observations[:, cfg.observable_names.index(cut.observable)]
        if cut.min is not None:
            mask &= col >= cut.min
        if cut.max is not None:
            mask &= col < cut.max
    return mask
