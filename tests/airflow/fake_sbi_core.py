"""Stands in for `sbi-core` in the Airflow tests: answers every step of the contract with a plausible summary.

The fixture `fake_sbi_core` installs it as an executable (SBI_CORE). Environment knobs:
- FAKE_SBI_RECORD: file that gets the last argv (JSON); FAKE_SBI_LOG: file that gets a JSON line per call
  (argv, and the AIRFLOW_CTX_*, S3 and OMP_NUM_THREADS variables the step saw).
- FAKE_SBI_STDERR: lines (|-separated) written to stderr; FAKE_SBI_WAIT_FOR: wait until this file exists.
- FAKE_SBI_EXIT: exit with this code (every call); FAKE_SBI_FAIL: exit with FAKE_SBI_FAIL_EXIT (default 1)
  when this text is in the argv.
- FAKE_SBI_STDOUT: print this instead of the summary.
- FAKE_SBI_PLAN: JSON object whose keys replace the work lists below (e.g. {"toy_blocks": []}).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PLAN: dict[str, Any] = {
    "samplers": [],
    "shards": [0, 1, 2, 3],
    "n_groups": 2,
    "methods": ["alices", "benchmark_ratio"],
    "members": 2,
    "evaluate_batches": ["0", "1"],
    "likelihood_batches": ["0", "1", "2"],
    "hessian_blocks": ["0:2", "2:4"],
    "scan_blocks": ["0:5", "5:10", "10:11"],
    "toy_blocks": ["0:2", "2:4"],
}


def options(argv: list[str]) -> dict[str, list[str]]:
    """`--flag value` pairs (repeatable) and bare `--flag`s (value "")."""
    out: dict[str, list[str]] = {}
    i = 1
    while i < len(argv):
        flag = argv[i]
        if flag.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.setdefault(flag, []).append(argv[i + 1])
            i += 2
        else:
            out.setdefault(flag, []).append("")
            i += 1
    return out


def summary(argv: list[str], plan: dict[str, Any]) -> dict[str, Any]:
    """What the real step would print, in the shape of the step contract (COMMON.md)."""
    step, opts = argv[0], options(argv)
    run = (opts.get("--run") or ["/fake/run"])[0]
    out: dict[str, Any] = {"step": step, "argv": argv, "run": run}
    n_networks = len(plan["methods"]) * plan["members"]
    if step == "configure":
        out.update(shards=plan["shards"], n_groups=plan["n_groups"], methods=plan["methods"], n_networks=n_networks,
                   samplers=plan["samplers"])
    elif step == "derive":
        out.update(source=opts["--from"][0], events=f"{opts['--from'][0]}/events.h5", methods=plan["methods"],
                   n_networks=n_networks)
    elif step == "combine" and "--all" in opts:
        out.update(output=f"{run}/events.h5", n_events=4000)
    elif step == "sample":
        method = opts["--method"][0]
        out["networks"] = [f"{method}-theta-nominal-m{m:02d}" for m in range(plan["members"])]
    elif step == "train":
        out["networks"] = opts["--network"]
        out["results"] = {n: {"status": "ok", "epochs": 5, "best_val_loss": 0.5 + i / 100}
                          for i, n in enumerate(opts["--network"])}
    elif step == "ensemble":
        out.update(evaluate_batches=plan["evaluate_batches"], failed_networks=plan.get("failed_networks", []))
    elif step == "evaluate" and "--report" in opts:
        out.update(plots=f"{run}/evaluation/plots", metrics=f"{run}/evaluation/metrics.json")
    elif step == "dataset":
        out["likelihood_batches"] = plan["likelihood_batches"]
    elif step == "fit":
        out.update(hessian_blocks=plan["hessian_blocks"], valid=True, values={"cW": 0.31, "cHW": -0.18},
                   errors={"cW": 0.05, "cHW": 0.06})
    elif step == "assemble":
        out.update(scan_blocks=plan["scan_blocks"], toy_blocks=plan["toy_blocks"])
    elif step == "report":
        out.update(results=f"{run}/inference/results.json", plots=f"{run}/inference/plots",
                   best_fit={"cW": 0.31, "cHW": -0.18}, errors={"cW": 0.05, "cHW": 0.06}, valid=True,
                   intervals={"cW": {"level": 0.68, "lo": 0.26, "hi": 0.36}})
    return out


def fake_summary(argv: list[str], **plan: Any) -> dict[str, Any]:
    """The summary this fake prints for `argv` (tests compare what came through Airflow with it)."""
    return summary(argv, {**PLAN, **plan})


def main() -> int:
    argv = sys.argv[1:]
    if os.environ.get("FAKE_SBI_RECORD"):
        Path(os.environ["FAKE_SBI_RECORD"]).write_text(json.dumps(argv))
    if os.environ.get("FAKE_SBI_LOG"):
        seen = {k: os.environ.get(k) for k in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AWS_ACCESS_KEY_ID",
                                               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                                               "SBI_S3_ENDPOINT_URL", "OMP_NUM_THREADS")}
        with open(os.environ["FAKE_SBI_LOG"], "a") as log:
            log.write(json.dumps({"argv": argv, **seen}) + "\n")
    for line in filter(None, os.environ.get("FAKE_SBI_STDERR", "").split("|")):
        print(line, file=sys.stderr, flush=True)
    gate = os.environ.get("FAKE_SBI_WAIT_FOR")
    deadline = time.monotonic() + 20
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    code = int(os.environ.get("FAKE_SBI_EXIT", "0"))
    fail = os.environ.get("FAKE_SBI_FAIL")
    if fail and fail in " ".join(argv):
        code = code or int(os.environ.get("FAKE_SBI_FAIL_EXIT", "1"))
    if code:
        print(f"sbi-core {argv[0] if argv else ''}: error: generation.events must be > 0", file=sys.stderr)
        return code
    plan = {**PLAN, **json.loads(os.environ.get("FAKE_SBI_PLAN") or "{}")}
    print(os.environ.get("FAKE_SBI_STDOUT") or json.dumps(summary(argv, plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
