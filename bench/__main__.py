"""`python -m bench [NAME ...] [--quick]`: run benchmarks, one JSON line per figure, then a Markdown table."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from bench.common import machine, table

BENCHMARKS = {
    "combine": "bench.combine",
    "generate": "bench.generate",
    "sampler": "bench.sampler",
    "dag": "bench.dag",
    "fanout": "bench.fanout",
    "morphing": "bench.morphing",
    "ingest": "bench.ingest",
    "train": "bench.train",
    "learn": "bench.learn",
    "madminer": "bench.madminer",
    "nll": "bench.nll",
    "fit": "bench.fit",
    "hessian": "bench.hessian",
    "storage": "bench.storage",
    "toy_limits": "bench.toy_limits",
    "active_learning": "bench.active_learning",
    "hpo": "bench.hpo",
    "learned_fit": "bench.learned_fit",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 5 minutes on 2 cores)")
    p.add_argument("--full", action="store_true",
                   help="fit only: the whole fit at ATLAS scale, 10^7 events and 100 nuisances (bench/fit_scale.py)")
    p.add_argument("--device", default="cpu", help="fit --full only: the JAX platform to fit on (cpu, gpu)")
    p.add_argument("--size", type=int, default=None,
                   help="fanout only: shards and networks (default 1000; --quick 100)")
    args = p.parse_args(argv)
    # One BLAS thread per process: the baselines and the parallel runs must use the cores we say they use.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    print(json.dumps({"name": "machine", **machine()}), flush=True)
    records = []
    for name in args.names or list(BENCHMARKS):
        if name == "fit" and args.full:
            from bench.fit_scale import run as run_full

            records.extend(run_full(quick=args.quick, device=args.device))
            continue
        module = importlib.import_module(BENCHMARKS[name])
        sized = {"size": args.size} if name == "fanout" and args.size else {}
        records.extend(module.run(quick=args.quick, **sized))
    print("\n" + table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
