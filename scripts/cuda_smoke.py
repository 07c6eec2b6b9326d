"""Run every CUDA operator once on small inputs and compare with the CPU reference.

Meant to run under ``compute-sanitizer --tool memcheck`` (small shapes keep it fast); exits
with status 1 on any mismatch. ``--device cpu`` runs the same comparisons on the CPU kernels
(a check of this script itself on machines without a GPU).
"""

from __future__ import annotations

import argparse
import sys

import torch

import anomaly_kernels  # noqa: F401  (registers the operators)
from anomaly_kernels import ops, reference


def _close(name: str, got: torch.Tensor, expected: torch.Tensor, tol: float) -> bool:
    diff = (got.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item() if got.numel() else 0.0
    ok = diff <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {diff:.2e}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", help="device whose kernels are checked (default cuda)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    cuda = torch.device(args.device)
    results = []

    features = torch.randn(3001, 77)
    min_distances = torch.rand(3001) * 10
    got, expected = min_distances.to(cuda), min_distances.clone()
    index = ops.kcenter_step_(features.to(cuda), got, 5)
    ref_index = reference.kcenter_step_(features, expected, 5)
    results.append(_close("kcenter_step_", got, expected, 1e-4) and int(index) == int(ref_index))

    got = min_distances.to(cuda)
    expected = min_distances.clone()
    row = torch.randn(77)
    index = ops.kcenter_step_to_(features.to(cuda), got, row.to(cuda))
    results.append(_close("kcenter_step_to_", got, expected.copy_(torch.minimum(expected, (features - row).norm(dim=1))), 1e-4))

    for dtype in (torch.float32, torch.bfloat16):
        for prune in (False, True):
            x = (torch.randint(-9, 9, (4000, 33)).float()).to(dtype)
            k = 40
            state = [torch.full((4000,), float("inf")), torch.full((4000,), -1, dtype=torch.int32), torch.zeros(k, dtype=torch.int64)]
            state[2][0] = 3
            gpu = [t.to(cuda) for t in state]
            ops.kcenter_greedy_(x.to(cuda), *gpu, 0, k - 1, True, prune)
            reference.kcenter_greedy_(x, *state, 0, k - 1, True, prune)
            same = torch.equal(gpu[2].cpu(), state[2])
            print(f"{'ok  ' if same else 'FAIL'} kcenter_greedy_ {dtype} prune={prune}: indices {'equal' if same else 'differ'}")
            results.append(same)

    crow = torch.tensor([0, 2, 3, 6])
    col = torch.tensor([0, 5, 2, 1, 3, 7])
    signs = torch.tensor([1, -1, 1, -1, 1, 1], dtype=torch.int8)
    x = torch.randn(1000, 8)
    results.append(_close("sparse_sign_projection", ops.sparse_sign_projection(x.to(cuda), crow.to(cuda), col.to(cuda), signs.to(cuda), 0.5),
                          reference.sparse_sign_projection(x, crow, col, signs, 0.5), 1e-5))

    # PatchCore's shape (1,536 columns, about 39 per output): 303 outputs keep the packed pattern
    # in shared memory, 1,200 outputs read it from global memory; 300 rows make several tiles.
    wide_rows = torch.randn(300, 1536)
    for outputs in (303, 1200):
        per_output = torch.randint(20, 60, (outputs,))
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), per_output.cumsum(0)])
        col = torch.cat([torch.randperm(1536)[:n] for n in per_output.tolist()])
        signs = torch.randint(0, 2, (col.numel(),), dtype=torch.int8) * 2 - 1
        results.append(_close(f"sparse_sign_projection 300x1536 -> {outputs}",
                              ops.sparse_sign_projection(wide_rows.to(cuda), crow.to(cuda), col.to(cuda), signs.to(cuda), 0.1),
                              reference.sparse_sign_projection(wide_rows, crow, col, signs, 0.1), 1e-4))

    embedding = torch.randn(6, 40, 5, 7)
    mean, precision = ops.gaussian_fit(embedding)
    gpu_mean, gpu_precision = ops.gaussian_fit(embedding.to(cuda))
    results.append(_close("gaussian_fit (cuSOLVER path)", gpu_precision, precision, 1e-3))
    query = torch.randn(3, 40, 5, 7)
    results.append(_close("mahalanobis", ops.mahalanobis(query.to(cuda), mean.to(cuda), precision.to(cuda)),
                          reference.mahalanobis(query, mean, precision), 1e-3))
    # Packed precisions, 65 channels (a partial second tile, a diagonal tile read from its mirror).
    wide = torch.randn(20, 65, 3, 4)
    wide_mean, wide_precision = ops.gaussian_fit(wide)
    gpu_wide_mean, gpu_packed = ops.gaussian_fit(wide.to(cuda), packed=True)
    wide_query = torch.randn(5, 65, 3, 4)
    results.append(_close("mahalanobis, packed precision", ops.mahalanobis(wide_query.to(cuda), gpu_wide_mean, gpu_packed),
                          reference.mahalanobis(wide_query, wide_mean, wide_precision), 1e-3))

    # Enough positions (320) for groups of up to 32 images to stream the rows into registers.
    many = torch.randn(30, 70, 16, 20)
    many_mean, many_precision = ops.gaussian_fit(many)
    gpu_many_mean, gpu_many_packed = ops.gaussian_fit(many.to(cuda), packed=True)
    for b in (1, 5, 20):
        many_query = torch.randn(b, 70, 16, 20)
        expected_many = reference.mahalanobis(many_query, many_mean, many_precision)
        results.append(_close(f"mahalanobis, {b} image(s) at 320 positions",
                              ops.mahalanobis(many_query.to(cuda), many_mean.to(cuda), many_precision.to(cuda)), expected_many, 1e-3))
        results.append(_close(f"mahalanobis, packed, {b} image(s) at 320 positions",
                              ops.mahalanobis(many_query.to(cuda), gpu_many_mean, gpu_many_packed), expected_many, 1e-3))

    data, queries = torch.randn(5000, 16), torch.randn(300, 16) * 2
    results.append(_close("kde_log_sum_exp", ops.kde_log_sum_exp(queries.to(cuda), data.to(cuda)),
                          reference.kde_log_sum_exp(queries, data), 1e-3))

    maps, k = torch.rand(2, 3, 40, 37), torch.rand(9)
    k = k / k.sum()  # a blur: outputs within the maps' range, so 1e-5 is a relative bound
    for border in ops.BORDER_TYPES:
        results.append(_close(f"separable_blur2d {border}", ops.separable_blur2d(maps.to(cuda), k.to(cuda), k.to(cuda), border),
                              reference.separable_blur2d(maps, k, k, border), 1e-5))

    start_y, weights_y = torch.tensor([0, 1, 2, 3, 3]), torch.rand(5, 2)
    start_x, weights_x = torch.tensor([0, 2, 4]), torch.rand(3, 3)
    grid = torch.rand(2, 1, 5, 7)
    results.append(_close("banded_resample2d", ops.banded_resample2d(grid.to(cuda), start_y.to(cuda), weights_y.to(cuda), start_x.to(cuda), weights_x.to(cuda)),
                          reference.banded_resample2d(grid, start_y, weights_y, start_x, weights_x), 1e-5))
    if cuda.type == "cuda":
        torch.cuda.synchronize()
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
