"""Run every benchmark, one after the other, each printing its table.

.venv/bin/python benchmarks/run.py [--quick] [--soak]

The soak benchmark (a 10-minute call; 2 minutes with --quick) runs only with --soak or
WEBRTCLAB_SOAK=1 in the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = {
    "bench_connect.py": {"quick": ["--runs", "5"], "full": ["--runs", "20"]},
    "bench_signaling.py": {"quick": ["--quick"], "full": []},
    "bench_server_footprint.py": {"quick": ["--quick"], "full": []},
    "bench_netem.py": {"quick": ["--quick"], "full": []},
    "bench_sweep.py": {"quick": ["--quick"], "full": []},
    "bench_turn.py": {"quick": ["--runs", "2", "--seconds", "2"], "full": []},
    "bench_load.py": {"quick": ["--quick"], "full": []},
    "bench_cc.py": {"quick": ["--quick"], "full": []},
    "bench_bwe.py": {"quick": ["--quick"], "full": []},
}
# Opt-in: long by design.
SOAK = {"bench_soak.py": {"quick": ["--duration", "120"], "full": []}}


def main() -> int:
    mode = "quick" if "--quick" in sys.argv[1:] else "full"
    soak = "--soak" in sys.argv[1:] or os.environ.get("WEBRTCLAB_SOAK", "") not in ("", "0")
    failed = 0
    for name, args in {**BENCHMARKS, **(SOAK if soak else {})}.items():
        script = HERE / name
        if not script.exists():
            continue
        print(f"\n== {name} ==", flush=True)
        failed += subprocess.call([sys.executable, str(script), *args[mode]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
