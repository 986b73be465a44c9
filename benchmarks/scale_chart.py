"""Chart of CPU per renewal and leases held against K, from a store-perf results file.

    python benchmarks/scale_chart.py benchmarks/results/store-perf-20261129.json

Writes the PNG next to the JSON (matplotlib: installed by the bench session).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # benchmarks/run.py, next to this file

    rows = json.loads(path.read_text())["scale"]
    series = {
        impl: sorted(
            (r["k"], r["cpu_ms_per_renewal"], r["held"] / r["k"])
            for r in rows
            if r["impl"] == impl and r.get("max_in_flight", 64) in (32, 64)
        )
        for impl in sorted({r["impl"] for r in rows})
    }
    out: Path = run.draw_scale(series, path.with_suffix(".png"), plt)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
