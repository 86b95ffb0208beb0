"""`make bench`: run every benchmark, each writing its table to bench/results/.

Benchmarks run one after another (the machine has 2 cores; running them together would
measure contention, not the service). A failing benchmark is reported and the rest still run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_masking.py", "bench_accuracy.py", "bench_rules.py", "bench_operating_point.py", "bench_review_order.py", "bench_domain.py", "bench_core.py", "bench_speed.py", "bench_load.py",
         "bench_scaleout.py",
         "bench_surge.py", "bench_scale.py", "bench_learning_curve.py", "bench_transformers.py"]


def main(argv: list[str]) -> int:
    wanted = argv or ORDER
    failed = []
    for name in wanted:
        script = HERE / name
        if not script.exists():
            print(f"[bench] {name}: not present, skipped", file=sys.stderr)
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"[bench] {name}: exit {rc} after {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if rc:
            failed.append(name)
    for table in sorted((HERE / "results").glob("*.md")):
        print(f"\n## {table.stem}\n\n{table.read_text(encoding='utf-8')}")
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
