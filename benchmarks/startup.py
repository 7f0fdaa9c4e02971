"""Start-up time: seconds from spawning ``tuneforge serve`` to its first 200 on ``/health``.

On an already-migrated data dir (SQLite by default, ``--database postgresql`` for a fresh
PostgreSQL database), each server is spawned ``--runs`` times and the median is kept. The
baseline, in the same run and on the same data dir, is the same server started with torch,
transformers, peft and llguidance imported first, as the app imported them before they were
made lazy; the time of a bare ``python -c "import torch"`` is printed too. The goal (/health
within 3 s) is printed as PASS/FAIL, never asserted:

    python benchmarks/startup.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import serving

GOAL_SECONDS = 3.0
# What importing the app loaded before: the inference engine's and the chat renderer's
# libraries, imported at module level.
EAGER_IMPORTS = (
    "import torch, peft, llguidance, llguidance.hf; "
    "from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer"
)
EAGER = (
    sys.executable,
    "-c",
    f"{EAGER_IMPORTS}; import sys; from tuneforge.cli import app; sys.argv[0] = 'tuneforge'; app()",
)


def median_start(url: str, data_dir: Path, runs: int, command: tuple[str, ...]) -> list[float]:
    seconds = []
    for _ in range(runs):
        with serving.served(url, data_dir, command=command) as server:
            seconds.append(server.seconds_to_health)
    return seconds


def import_seconds(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with serving.temporary_data_dir() as directory:
        data_dir = Path(directory)
        with serving.database(args.database, data_dir) as url:
            lazy = median_start(url, data_dir, args.runs, (serving.TUNEFORGE,))
            eager = median_start(url, data_dir, args.runs, EAGER)
    torch_import = import_seconds("import torch", args.runs)
    app_import = import_seconds("import tuneforge.app", args.runs)
    ours, baseline = statistics.median(lazy), statistics.median(eager)
    print(f"tuneforge serve -> first 200 on /health ({args.database}, median of {args.runs}):")
    print(f"  as shipped:                        {ours:6.2f} s  {[round(s, 2) for s in lazy]}")
    print(f"  ML libraries imported first:       {baseline:6.2f} s  {[round(s, 2) for s in eager]}")
    print(f"  ratio baseline/ours: {baseline / ours:.1f}x")
    print(f"python -c 'import torch': {torch_import:.2f} s")
    print(f"python -c 'import tuneforge.app': {app_import:.2f} s")
    verdict = "PASS" if ours <= GOAL_SECONDS else "FAIL"
    print(f"Goal: /health within {GOAL_SECONDS:g} s of spawn: {verdict}")


if __name__ == "__main__":
    main()
