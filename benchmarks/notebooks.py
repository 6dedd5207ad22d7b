"""Execute every course notebook and print its wall time and peak memory (budget: 60 s, 1.5 GB each).

Usage: ``python benchmarks/notebooks.py [notebooks/NN_name.ipynb ...]``. Each notebook runs in a
fresh kernel with nbclient; peak memory is the kernel process's maximum resident set size
(``ru_maxrss`` of the children of a fresh runner process), so it includes Python, PyTorch and
everything the chapter imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S, BUDGET_MB = 60.0, 1536.0

_RUNNER = """
import resource, sys, time, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
start = time.perf_counter()
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
elapsed = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{elapsed:.3f} {peak_mb:.1f}")
"""


def measure(path: Path) -> tuple[float, float]:
    """Wall time (s) and peak kernel memory (MB) of executing ``path`` top to bottom."""
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path), str(path.parent)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{path.name} failed:\n{result.stderr[-3000:]}")
    elapsed, peak = result.stdout.split()[-2:]
    return float(elapsed), float(peak)


def main(paths: list[str]) -> int:
    if any(p.startswith("-") for p in paths):  # --help and any option: there are none
        print(__doc__)
        return 0 if paths[0] in ("-h", "--help") else 2
    notebooks = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = False
    print(f"{'notebook':40s} {'time (s)':>9s} {'peak (MB)':>10s}  within budget")
    for path in notebooks:
        seconds, megabytes = measure(path)
        ok = seconds <= BUDGET_S and megabytes <= BUDGET_MB
        failed |= not ok
        print(f"{path.name:40s} {seconds:9.1f} {megabytes:10.0f}  {'yes' if ok else 'NO'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
