"""Every simulated CUDA kernel on the conformance samples, under AddressSanitizer: no read or
write outside a tensor, a scratch buffer or a block's shared memory (the CPU counterpart of
compute-sanitizer's memcheck, which only a GPU run has)."""

from __future__ import annotations

from cuda_sim import address_sanitizer


def test_address_sanitizer_reports_a_read_past_a_tensor():
    result = address_sanitizer.run(
        """
        import ctypes, torch
        from cuda_sim.build import load
        x, out = torch.randn(16), torch.zeros(16)
        load().selftest_read_past_end(16, ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()))
        print("not stopped")
        """
    )
    assert result.returncode != 0 and "not stopped" not in result.stdout
    assert "heap-buffer-overflow" in result.stderr and "read_past_end" in result.stderr


def test_every_operator_stays_inside_its_buffers():
    result = address_sanitizer.run(
        """
        import torch
        from conformance import TABLE
        from cuda_sim.kernels import TURING_LIKE, reverse_thread_order
        from cuda_sim.operators import OPERATORS
        for name, simulated in sorted(OPERATORS.items()):
            entry = TABLE[name]
            for dtype in entry.dtypes_on("cuda"):
                for sample in entry.samples("cpu", dtype):
                    args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in sample.args)
                    simulated(*args)
                    args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in sample.args)
                    simulated(*args, device=TURING_LIKE)
        print("clean")
        """
    )
    assert result.returncode == 0 and "clean" in result.stdout, result.stderr[-6000:]
