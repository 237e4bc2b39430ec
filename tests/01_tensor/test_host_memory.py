"""Importing tinytorch keeps freed host memory for reuse (glibc), so a training step's arrays do
not fault their pages in again every step; TINYTORCH_KEEP_FREED_MEMORY=0 turns it off."""

import os
import subprocess
import sys

import pytest

# One "step" allocates 24 arrays of 1.5 MB (a GPT step's activations) and frees them all;
# the pages faulted in by the later steps are what the setting saves.
PROBE = """
import resource
import numpy as np
import tinytorch
def step():
    kept = [np.ones(393216, dtype=np.float32) for _ in range(24)]
    del kept
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                reason="the setting is glibc's (mallopt); other platforms keep their allocator's")


def page_faults(keep):
    env = dict(os.environ, TINYTORCH_KEEP_FREED_MEMORY="1" if keep else "0")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@glibc_only
def test_freed_arrays_are_reused_without_page_faults():
    kept, returned = page_faults(keep=True), page_faults(keep=False)
    # 5 steps x 36 MB is ~46,000 pages of 4 KiB when every step maps fresh memory
    if returned < 2_000:
        pytest.skip(f"only {returned} page faults with the setting off (huge pages?): nothing to compare")
    assert kept < returned / 20, (f"with freed memory kept, repeated steps should reuse pages: "
                                  f"{kept} page faults vs {returned} with TINYTORCH_KEEP_FREED_MEMORY=0")
