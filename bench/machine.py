"""What the benchmarks record about the machine they ran on (shared by bench/*.py)."""

import platform
from pathlib import Path


def cpu_name():
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_name():
    """NumPy's BLAS library and version, e.g. 'scipy-openblas 0.3.31'."""
    import numpy as np
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older numpy: no dict mode
        return "unknown"


def new_result_path(out_dir, stem):
    """out_dir/stem.json, or stem-run2.json, -run3... : a new result never overwrites a recorded one."""
    path, run = Path(out_dir) / f"{stem}.json", 1
    while path.exists():
        run += 1
        path = Path(out_dir) / f"{stem}-run{run}.json"
    return path
