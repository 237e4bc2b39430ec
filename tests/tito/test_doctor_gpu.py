"""`tito doctor --gpu`: the GPU path end to end; without a usable GPU it says why and exits 1."""

from typer.testing import CliRunner

import tinytorch as tt
from tito import doctor
from tito.main import app


def test_doctor_gpu_runs_the_gpu_probes_and_fails_without_a_gpu():
    done = CliRunner().invoke(app, ["doctor", "--gpu"])
    assert "tinytorch on cuda" in done.output and "bench/gpu.py" in done.output, done.output
    if tt.cuda_available():
        assert done.exit_code == 0 and "usable: matmul" in done.output, done.output
    else:
        assert done.exit_code == 1, done.output
        assert "unusable" in doctor.tinytorch_on_cuda(), "the reason the GPU cannot be used must be named"

