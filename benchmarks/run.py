"""Run every benchmark, one after the other, each printing its table.

.venv/bin/python benchmarks/run.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = {
    "bench_connect.py": {"quick": ["--runs", "5"], "full": ["--runs", "20"]},
    "bench_signaling.py": {"quick": ["--quick"], "full": []},
    "bench_netem.py": {"quick": ["--quick"], "full": []},
    "bench_sweep.py": {"quick": ["--quick"], "full": []},
    "bench_turn.py": {"quick": ["--runs", "2", "--seconds", "2"], "full": []},
}


def main() -> int:
    mode = "quick" if "--quick" in sys.argv[1:] else "full"
    failed = 0
    for name, args in BENCHMARKS.items():
        script = HERE / name
        if not script.exists():
            continue
        print(f"\n== {name} ==", flush=True)
        failed += subprocess.call([sys.executable, str(script), *args[mode]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
