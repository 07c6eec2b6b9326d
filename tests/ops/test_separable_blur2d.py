"""anomaly_kernels::separable_blur2d beyond the conformance table: even kernels against
conv2d, padding wider than the input, argument errors, the CUDA tiles and long kernels."""

import pytest
import torch
from conformance import blur_taps
from cuda_sim import operators as simulated
from cuda_sim.kernels import TURING_LIKE, late_copies

from anomaly_kernels import ops, reference

BORDERS = ["reflect", "replicate", "constant", "circular"]

# Where the CUDA tiling changes.
TILE_SHAPES = [
    (2, 1, 7, 31, 8, 16),  # narrower than a tile, even taps
    (1, 2, 8, 32, 33, 33),  # one tile exactly; reflect wider than the input
    (2, 1, 9, 33, 3, 3),  # one row and one column past a tile
    (1, 1, 129, 65, 33, 33),  # past the tallest tile
    (2, 3, 130, 97, 16, 17),  # taps a multiple of the register strip, and one past it
    (1, 1, 300, 5, 1, 2),
    (5, 1, 33, 34, 24, 25),
]

# float32 rows that start on 16-byte boundaries (W a multiple of 4): the window is read in 16-byte
# chunks, with the border columns of the first and last tiles across one by one.
ALIGNED_ROW_SHAPES = [
    (2, 1, 40, 100, 33, 33),  # 4 tiles across, the last one past the right edge
    (1, 1, 20, 132, 31, 31),  # pad 15: chunks start 1 column before the window
    (1, 2, 17, 64, 4, 6),  # even taps
    (1, 1, 9, 8, 3, 9),  # narrower than a tile
    (1, 1, 6, 4, 11, 11),  # padding wider than the input
    (3, 1, 12, 36, 1, 1),
]


def _with_paddings(shapes):
    """(b, c, h, w, ky, kx, padding) for each shape: "same", and "valid" where the kernel fits."""
    return [(*shape, padding) for shape in shapes for padding in ("same", "valid")
            if padding == "same" or (shape[4] <= shape[2] and shape[5] <= shape[3])]


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_even_kernels_pad_like_conv_same(device):
    x = torch.randn(2, 2, 11, 13, device=device)
    k_y, k_x = blur_taps(4, torch.float32, device, 1), blur_taps(6, torch.float32, device, 2)
    out = ops.separable_blur2d(x, k_y, k_x, "constant", "same")
    expected = torch.nn.functional.conv2d(
        x, torch.outer(k_y, k_x).expand(2, 1, 4, 6), groups=2, padding="same"
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("border", ["reflect", "circular"])
def test_padding_wider_than_input_keeps_mirroring(device, border):
    # Tiling the input with its mirror (reflect) or itself (circular) makes the padding fit F.pad.
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64, device=device)
    k = blur_taps(11, torch.float64, device, 3)
    if border == "reflect":
        row = torch.cat([x, x.flip(-1)[..., 1:-1]], dim=-1)
        tile = torch.cat([row, row.flip(-2)[..., 1:-1, :]], dim=-2)
    else:
        tile = x
    big = tile.repeat(1, 1, 5, 5)
    # Locate the copy of x in the middle of the tiling and compare there.
    ph, pw = tile.shape[-2] * 2, tile.shape[-1] * 2
    expected = reference.separable_blur2d(big, k, k, border, "same")[..., ph : ph + 4, pw : pw + 5]
    out = ops.separable_blur2d(x, k, k, border, "same")
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.randn(3, 8, 8), torch.ones(3), torch.ones(3)), ValueError, "input must be 4-D"),
        ((torch.randn(1, 1, 8, 8).half(), torch.ones(3).half(), torch.ones(3).half()), TypeError, "input must be float32"),
        ((torch.randn(1, 1, 8, 8), torch.ones(3, 1), torch.ones(3)), ValueError, "kernel_y must be a non-empty 1-D"),
        ((torch.randn(1, 1, 8, 8), torch.ones(3), torch.ones(0)), ValueError, "kernel_x must be a non-empty 1-D"),
        ((torch.randn(1, 1, 8, 8), torch.ones(3, dtype=torch.float64), torch.ones(3)), TypeError, "kernel_y must be float32"),
        ((torch.randn(1, 1, 8, 8), torch.ones(3), torch.ones(3), "mirror"), ValueError, "border_type must be one of"),
        ((torch.randn(1, 1, 8, 8), torch.ones(3), torch.ones(3), "reflect", "full"), ValueError, "padding must be one of"),
        ((torch.randn(1, 1, 4, 8), torch.ones(5), torch.ones(3), "reflect", "valid"), ValueError, "'valid' padding needs"),
    ],
)
def test_bad_arguments_are_named(args, error, match):
    with pytest.raises(error, match=match):
        ops.separable_blur2d(*args)


def test_native_checks_guard_direct_dispatcher_calls():
    with pytest.raises(RuntimeError, match="border_type must be one of"):
        torch.ops.anomaly_kernels.separable_blur2d(torch.randn(1, 1, 4, 4), torch.ones(3), torch.ones(3), "wrap", True)


@pytest.mark.parametrize("border", ["reflect", "circular"])
def test_gradient_with_padding_wider_than_input(device, border):
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    k = blur_taps(9, torch.float64, device, 8)
    assert torch.autograd.gradcheck(lambda t: ops.separable_blur2d(t, k, k, border, "same"), (x,), fast_mode=True)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("b,c,h,w,ky,kx,padding", _with_paddings([(1, 1, 1, 1, 1, 1)] + TILE_SHAPES))
def test_cuda_tiles_match_cpu(cuda_device, border, padding, b, c, h, w, ky, kx):
    # The CPU kernel is an independent implementation with the same border semantics (reflect
    # and circular keep going past the input, where F.pad would refuse).
    device = cuda_device
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    k_y, k_x = blur_taps(ky, torch.float64, "cpu", h), blur_taps(kx, torch.float64, "cpu", w)
    expected = ops.separable_blur2d(x, k_y, k_x, border, padding)
    out = ops.separable_blur2d(x.to(device), k_y.to(device), k_x.to(device), border, padding)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-12, atol=1e-12)
    out32 = ops.separable_blur2d(x.float().to(device), k_y.float().to(device), k_x.float().to(device), border, padding)
    scale = float(k_y.abs().sum() * k_x.abs().sum())  # bounds every output's sum of |terms| / max|x|
    torch.testing.assert_close(out32.cpu().double(), expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("b,c,h,w,ky,kx", ALIGNED_ROW_SHAPES)
def test_cuda_chunked_window_loads_match_cpu(cuda_device, border, b, c, h, w, ky, kx):
    device = cuda_device
    x = torch.randn(b, c, h, w)
    k_y, k_x = blur_taps(ky, torch.float32, "cpu", h), blur_taps(kx, torch.float32, "cpu", w)
    expected = ops.separable_blur2d(x.double(), k_y.double(), k_x.double(), border, "same")
    scale = float(k_y.abs().sum() * k_x.abs().sum())
    for offset in (0, 1):  # rows 16-byte aligned, and 4 bytes off (a misaligned 16-byte load would fault)
        shifted = torch.empty(x.numel() + offset, device=device)[offset:].view_as(x).copy_(x)
        out = ops.separable_blur2d(shifted, k_y.to(device), k_x.to(device), border, "same")
        torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("taps,shape", [(161, (1, 1, 300, 70)), (301, (1, 2, 20, 30))])
@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_cuda_long_kernels(cuda_device, taps, shape, border):
    # 161 taps shrink the tile to fit shared memory; 301 taps exceed it even for the smallest
    # tile and take the two-pass path.
    device = cuda_device
    x = torch.randn(*shape, dtype=torch.float64)
    k_y, k_x = blur_taps(taps, torch.float64, "cpu", 1), blur_taps(taps - 2, torch.float64, "cpu", 2)
    expected = ops.separable_blur2d(x, k_y, k_x, border, "same")
    out = ops.separable_blur2d(x.float().to(device), k_y.float().to(device), k_x.float().to(device), border, "same")
    scale = float(k_y.abs().sum() * k_x.abs().sum())
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("tile_rows", ["1", "8", "40", "128", "1000"])
def test_cuda_forced_tile_heights_give_the_same_blur(cuda_device, monkeypatch, tile_rows):
    # ANOMALY_KERNELS_BLUR_TILE_ROWS overrides the tile height the kernel picks (rounded up to
    # its 8-row strips, at most 128); every pixel sums the same terms in the same order.
    device = cuda_device
    x = torch.randn(3, 2, 227, 53, device=device)
    k_y, k_x = blur_taps(33, torch.float32, device, 12), blur_taps(17, torch.float32, device, 13)
    monkeypatch.delenv("ANOMALY_KERNELS_BLUR_TILE_ROWS", raising=False)
    chosen = ops.separable_blur2d(x, k_y, k_x, "reflect", "same")
    monkeypatch.setenv("ANOMALY_KERNELS_BLUR_TILE_ROWS", tile_rows)
    forced = ops.separable_blur2d(x, k_y, k_x, "reflect", "same")
    assert torch.equal(forced, chosen)


def test_cuda_anomaly_map_sizes_and_many_planes(cuda_device):
    device = cuda_device
    with torch.backends.cudnn.flags(allow_tf32=False):
        for shape in [(32, 1, 224, 224), (3, 2, 256, 256), (40000, 2, 3, 5)]:
            x = torch.randn(*shape, device=device)
            k = blur_taps(33 if shape[-1] > 100 else 3, torch.float32, device, 9)
            k = k / k.sum()
            out = ops.separable_blur2d(x, k, k, "reflect", "same")
            expected = reference.separable_blur2d(x.double(), k.double(), k.double(), "reflect", "same")
            torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_cuda_gradient_across_tiles(cuda_device):
    device = cuda_device
    x = torch.randn(2, 1, 70, 45, dtype=torch.float64, device=device, requires_grad=True)
    k_y, k_x = blur_taps(9, torch.float64, device, 10), blur_taps(12, torch.float64, device, 11)
    grad_out = torch.randn(2, 1, 70, 45, dtype=torch.float64, device=device)
    (native,) = torch.autograd.grad(ops.separable_blur2d(x, k_y, k_x, "reflect", "same"), x, grad_out)
    (expected,) = torch.autograd.grad(reference.separable_blur2d(x, k_y, k_x, "reflect", "same"), x, grad_out)
    torch.testing.assert_close(native, expected)


def test_autograd_records_only_when_a_gradient_is_wanted(device):
    """Calls with nothing to differentiate skip the autograd layer; the result is the same and
    carries no graph, while calls that need one still record it."""
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0)).to(device)
    taps = torch.tensor([0.25, 0.5, 0.25], device=device)
    plain = ops.separable_blur2d(x, taps, taps)
    assert plain.grad_fn is None and not plain.requires_grad
    leaf = x.clone().requires_grad_()
    recorded = ops.separable_blur2d(leaf, taps, taps)
    assert recorded.grad_fn is not None and torch.equal(recorded.detach(), plain)
    with torch.no_grad():
        assert ops.separable_blur2d(leaf, taps, taps).grad_fn is None
    assert ops.separable_blur2d(x, taps.clone().requires_grad_(), taps).requires_grad


# The CUDA kernel on the CPU simulation of the kernels (tests/cuda_sim), on every machine.
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("b,c,h,w,ky,kx,padding", _with_paddings(TILE_SHAPES))
def test_simulated_cuda_tiles_match_cpu(border, b, c, h, w, ky, kx, padding):
    x = torch.randn(b, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h + w))
    k_y, k_x = blur_taps(ky, torch.float64, "cpu", h), blur_taps(kx, torch.float64, "cpu", w)
    expected = ops.separable_blur2d(x, k_y, k_x, border, padding)
    out = simulated.separable_blur2d(x, k_y, k_x, border, padding == "same")
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("b,c,h,w,ky,kx,padding", _with_paddings(ALIGNED_ROW_SHAPES))
def test_simulated_cuda_chunked_window_loads_match_cpu(border, b, c, h, w, ky, kx, padding):
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(h * w))
    k_y, k_x = blur_taps(ky, torch.float32, "cpu", h), blur_taps(kx, torch.float32, "cpu", w)
    expected = ops.separable_blur2d(x.double(), k_y.double(), k_x.double(), border, padding)
    out = simulated.separable_blur2d(x, k_y, k_x, border, padding == "same")
    scale = float(k_y.abs().sum() * k_x.abs().sum())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6 * scale)
    # The same input 4 bytes off a 16-byte boundary takes the sample-by-sample loads: same sums.
    shifted = torch.empty(x.numel() + 1)[1:].view_as(x).copy_(x)
    assert torch.equal(simulated.separable_blur2d(shifted, k_y, k_x, border, padding == "same"), out)


@pytest.mark.parametrize("taps,shape", [(161, (1, 1, 300, 70)), (301, (1, 2, 20, 30))])
@pytest.mark.parametrize("device", [None, TURING_LIKE], ids=["h100-like", "turing-like"])
def test_simulated_cuda_long_kernels(taps, shape, device):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(taps))
    k_y, k_x = blur_taps(taps, torch.float32, "cpu", 1), blur_taps(taps - 2, torch.float32, "cpu", 2)
    expected = ops.separable_blur2d(x.double(), k_y.double(), k_x.double(), "reflect", "same")
    out = simulated.separable_blur2d(x, k_y, k_x, "reflect", True, **({"device": device} if device else {}))
    scale = float(k_y.abs().sum() * k_x.abs().sum())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("tile_rows", [1, 8, 40, 128, 1000])
def test_simulated_cuda_forced_tile_heights_give_the_same_blur(tile_rows):
    x = torch.randn(3, 2, 227, 53, generator=torch.Generator().manual_seed(1))
    k_y, k_x = blur_taps(33, torch.float32, "cpu", 12), blur_taps(17, torch.float32, "cpu", 13)
    chosen = simulated.separable_blur2d(x, k_y, k_x, "reflect", True)
    assert torch.equal(simulated.separable_blur2d(x, k_y, k_x, "reflect", True, tile_rows=tile_rows), chosen)
    with late_copies():
        assert torch.equal(simulated.separable_blur2d(x, k_y, k_x, "reflect", True, tile_rows=tile_rows), chosen)
    expected = ops.separable_blur2d(x.double(), k_y.double(), k_x.double(), "reflect", "same")
    torch.testing.assert_close(chosen.double(), expected, rtol=1e-5, atol=1e-4)


def test_simulated_cuda_anomaly_map_size_and_many_planes():
    for shape, taps in [((4, 1, 224, 224), 33), ((3000, 2, 3, 5), 3)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(taps))
        k = blur_taps(taps, torch.float32, "cpu", 9)
        k = k / k.sum()
        out = simulated.separable_blur2d(x, k, k, "reflect", True)
        expected = reference.separable_blur2d(x.double(), k.double(), k.double(), "reflect", "same")
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
