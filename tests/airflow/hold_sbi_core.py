"""A stand-in `sbi-core` for the worker-kill test: the real sbi-core, except that the first try of one step is held.

Set as SBI_CORE. When SBI_HOLD_DIR is set and the arguments contain every item of SBI_HOLD_MATCH (a JSON
list, e.g. ["generate", "--shard", "0"]), the first call to match creates SBI_HOLD_DIR/held (its content: this
process's pid) and then blocks until SBI_HOLD_DIR/release exists: the test sees the file appear (the step has
started on the worker) and kills the worker. Every other call, the retry included, runs the real sbi-core.
"""

import json
import os
import sys
import time
from pathlib import Path

REAL = str(Path(sys.executable).with_name("sbi-core"))


def held_here(argv: list[str]) -> bool:
    """True for the one call that must hold (the marker did not exist and this process created it)."""
    hold_dir, match = os.environ.get("SBI_HOLD_DIR"), json.loads(os.environ.get("SBI_HOLD_MATCH", "[]"))
    if not hold_dir or not match or not all(item in argv for item in match):
        return False
    try:
        fd = os.open(Path(hold_dir) / "held", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


if __name__ == "__main__":
    if held_here(sys.argv[1:]):
        release = Path(os.environ["SBI_HOLD_DIR"]) / "release"
        while not release.exists():  # held until killed (or released)
            time.sleep(0.2)
    os.execv(REAL, [REAL, *sys.argv[1:]])
