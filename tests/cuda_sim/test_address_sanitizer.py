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
        # Where the tiling changes: wide matrices split over blocks, kernels too long for a tile,
        # bands as long as the input, rows too wide to stage.
        from conformance import band, blur_taps, gaussians, sign_pattern
        for b, c, dtype in [(1, 2048, torch.float32), (3, 700, torch.float64), (40, 300, torch.float32)]:
            OPERATORS["mahalanobis"](*gaussians(b, c, 1, 2, dtype, "cpu", seed=c))
        # Streamed rows (small groups, many positions), full, unaligned and packed.
        for b, c in [(1, 129), (5, 130), (8, 132), (20, 65)]:
            embedding, mean, precision = gaussians(b, c, 3, 4, torch.float32, "cpu", seed=c)
            rows, columns = torch.triu_indices(c, c)
            for matrices in (precision, precision[:, rows, columns].contiguous(),
                             torch.empty(precision.numel() + 1)[1:].view_as(precision).copy_(precision)):
                OPERATORS["mahalanobis"](embedding, mean, matrices)
        for taps, shape in [(161, (1, 1, 300, 70)), (301, (1, 2, 20, 30))]:
            x = torch.randn(*shape)
            OPERATORS["separable_blur2d"](x, blur_taps(taps, torch.float32, "cpu", 1), blur_taps(taps - 2, torch.float32, "cpu", 2))
        # Rows read in 16-byte chunks up to the plane's last column (W a multiple of 4).
        for shape, taps in [((1, 1, 5, 36), 33), ((2, 1, 9, 100), 31)]:
            x = torch.randn(*shape)
            for border in ("reflect", "constant"):
                OPERATORS["separable_blur2d"](x, blur_taps(taps, torch.float32, "cpu", 3), blur_taps(taps, torch.float32, "cpu", 4), border)
        x = torch.randn(1, 1, 600, 5)
        OPERATORS["banded_resample2d"](x, *band(130, 600, 600, 5, torch.float32, "cpu"), *band(7, 5, 2, 6, torch.float32, "cpu"))
        OPERATORS["sparse_sign_projection"](torch.randn(70, 9000), *sign_pattern(40, 9000, 0.01, 3, "cpu"), 0.3)
        print("clean")
        """
    )
    assert result.returncode == 0 and "clean" in result.stdout, result.stderr[-6000:]
