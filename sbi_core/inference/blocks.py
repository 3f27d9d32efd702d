"""The inference work a config asks for, split into the blocks of the mapped tasks.

`scan_parameters(cfg)` resolves `scan.parameters` (default: every parameter of interest alone);
`scan_blocks(cfg)` / `toy_blocks(cfg)` are the "A:B" ranges of the mapped scan and toy tasks.
"""

from __future__ import annotations

from sbi_core.config import AnalysisConfig

__all__ = ["scan_blocks", "scan_parameters", "scan_point_count", "split_range", "toy_blocks"]


def scan_parameters(cfg: AnalysisConfig) -> list[list[str]]:
    """The configured scans, or every parameter of interest alone when none are given."""
    given = cfg.inference.scan.parameters
    return [list(e) for e in given] if given is not None else [[p] for p in cfg.parameter_names]


def split_range(total: int, parts: int) -> list[str]:
    """'A:B' strings splitting 0..total into at most `parts` contiguous, nearly equal blocks."""
    parts = max(1, min(parts, total))
    edges = [round(i * total / parts) for i in range(parts + 1)]
    return [f"{a}:{b}" for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def scan_point_count(cfg: AnalysisConfig) -> int:
    """Grid points of all configured scans together: points per 1D scan, points^2 per 2D grid."""
    return sum(cfg.inference.scan.points ** len(entry) for entry in scan_parameters(cfg))


def scan_blocks(cfg: AnalysisConfig) -> list[str]:
    """The mapped scan tasks' point ranges over the concatenated grids of `scan_parameters(cfg)`."""
    return split_range(scan_point_count(cfg), cfg.inference.scan.blocks)


def toy_blocks(cfg: AnalysisConfig) -> list[str]:
    """The mapped toy tasks' ranges ('0:50', '50:100', ...); [] when toys.n is 0."""
    t = cfg.inference.toys
    return [f"{a}:{min(t.n, a + t.batch)}" for a in range(0, t.n, t.batch)]
