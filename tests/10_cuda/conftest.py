"""Module 10's kernels run in numba's CUDA simulator unless the suite targets a GPU.

The simulator is chosen by NUMBA_ENABLE_CUDASIM=1, read once when numba is first imported,
so it is set here, before any test imports numba (tinytorch.cuda.launch does the same when
CuPy finds no GPU).
"""

import os

if not os.environ.get("TINYTORCH_TEST_DEVICE", "cpu").startswith("cuda"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
