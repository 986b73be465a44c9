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

    rows = json.loads(path.read_text())["scale"]
    fig, (cpu, held) = plt.subplots(1, 2, figsize=(11, 4))
    for impl in sorted({r["impl"] for r in rows}):
        points = sorted((r["k"], r) for r in rows if r["impl"] == impl and r.get("max_in_flight", 64) in (32, 64))
        ks = [k for k, _ in points]
        cpu.plot(ks, [r["cpu_ms_per_renewal"] for _, r in points], marker="o", label=impl)
        held.plot(ks, [r["held"] / r["k"] for _, r in points], marker="o", label=impl)
    for axis, title in ((cpu, "CPU ms per renewal"), (held, "leases held / K")):
        axis.set_xscale("log")
        axis.set_xlabel("K leases in one process (retry_period 2 s)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    held.set_ylim(0, 1.05)
    out = path.with_suffix(".png")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
