"""The final results of an `hpo` study: per segment the best hyperparameters and their value, the `training:`
section YAML the pipeline can use (`best/<segment>.yaml`) with the same values as `--set` overrides, the best
network registered in MLflow with the study's alias, and `plots/best.png` (best value against trainings spent)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import yaml

from sbi_core import storage
from sbi_core.layout import RunLayout
from sbi_core.studies.state import StudyState
from sbi_core.studies.study import Study

log = logging.getLogger(__name__)

__all__ = ["overrides", "report", "training_section"]


def training_section(training: dict[str, Any]) -> dict[str, Any]:
    """The trial's training settings as a `training:` section (network, optimizer, alpha)."""
    return {"training": {k: training[k] for k in ("network", "optimizer", "alpha") if k in training}}


def overrides(section: dict[str, Any], prefix: str = "") -> list[str]:
    """`PATH=VALUE` overrides (as `--set` takes them) of a nested section."""
    out = []
    for k, v in section.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out += overrides(v, path)
        else:
            out.append(f"{path}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


def _plot(uri: str, curves: dict[str, list[float]], objective: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for seg, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, "-o", ms=3, label=seg)
    ax.set_xlabel("trainings of the segment")
    ax.set_ylabel(f"best {objective} so far")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with storage.atomic_write(uri) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report(study: Study, state: StudyState, history: Sequence[dict[str, Any]], segments: list[str]) -> dict[str, Any]:
    from sbi_core import tracking

    o = study.options
    best_all: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    for seg in segments:
        mine = [e for e in history if e["inputs"].get("segment") == seg]
        running, curve = float("inf"), []
        for e in mine:
            if e["ok"]:
                running = min(running, float(e["result"]["value"]))
            curve.append(running)
        curves[seg] = curve
        ok = [e for e in mine if e["ok"]]
        if not ok:
            best_all[seg] = {"status": "failed", "trainings": len(mine)}
            continue
        b = min(ok, key=lambda e: e["result"]["value"])
        section = training_section(b["result"]["training"])
        uri = storage.join(study.uri, "best", f"{seg}.yaml")
        storage.write_text(uri, yaml.safe_dump(section, sort_keys=False))
        model = RunLayout(b["inputs"]["out"]).network_file(seg, "model.pt")
        tracking.register_study_model(study.uri, study.name, study.config.model_dump(mode="json"),
                                      f"{study.analysis.name}.hpo.{seg}", [model, uri],
                                      {"value": b["result"]["value"], "val_loss": b["result"].get("val_loss"),
                                       "closure_rms": b["result"].get("closure_rms")},
                                      {"params": b["inputs"]["params"], "trial": b["point"]}, o.alias)
        best_all[seg] = {"status": "ok", "value": b["result"]["value"], "val_loss": b["result"].get("val_loss"),
                         "closure_rms": b["result"].get("closure_rms"), "params": b["inputs"]["params"],
                         "trial": b["point"], "model": model, "training_yaml": uri, "overrides": overrides(section),
                         "trainings": len(mine), "failed": sum(not e["ok"] for e in mine)}
    plot = study.layout.plot("best")
    _plot(plot, curves, o.objective)
    headline = {f"best_{seg}": b["value"] for seg, b in best_all.items() if b["status"] == "ok"}
    return {"objective": o.objective, "searcher": o.searcher, "segments": best_all, "curves": curves,
            "headline": headline, "plots": {"best": plot}}
