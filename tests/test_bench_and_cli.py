"""The benchmark cases check what they claim, and the command line reports the build."""

import json
import os

import pytest
import torch

from anomaly_kernels import build_info
from anomaly_kernels.bench import cases
from anomaly_kernels.bench.runner import run_benchmarks
from anomaly_kernels.bench.timing import memory_bandwidth_gbs, time_call
from anomaly_kernels.cli import main


@pytest.mark.parametrize(
    "make_case",
    [
        lambda d: cases.kcenter_step_case(d, 3000, 40),
        lambda d: cases.kcenter_greedy_case(d, 2000, 512, 0.01),
        lambda d: cases.kcenter_greedy_case(d, 2000, 512, 0.05, data="clustered"),
        lambda d: cases.gaussian_blur_case(d, 2, 48),
        lambda d: cases.sparse_projection_case(d, 500, 256),
        lambda d: cases.gaussian_fit_case(d, 6, 5, 4),
        lambda d: cases.gaussian_fit_case(d, 6, 5, 4, baseline="loop"),
        lambda d: cases.mahalanobis_case(d, 3, 6, 5),
        lambda d: cases.kde_case(d, 300, 4, 20),
        lambda d: cases.upsample_blur_case(d, 2, 14, 56),
    ],
)
def test_cases_agree_and_their_checks_can_fail(device, make_case):
    case = make_case(device)
    native_out, reference_out = case.native(), case.reference()
    agree, detail = case.check(native_out, reference_out)
    assert agree, detail
    assert case.bytes_moved > 0
    # A corrupted output must be caught by the same check.
    if case.name == "kcenter_step":
        corrupted = (native_out[0], native_out[1] + 1.0)
    elif case.name == "kcenter_greedy":
        corrupted = ([native_out[0][0]] * len(native_out[0]), native_out[1])
    elif case.name.startswith("gaussian_fit"):
        corrupted = (native_out[0], native_out[1] * 1.01)
    else:
        corrupted = native_out + 0.01
    assert not case.check(corrupted, reference_out)[0]


def test_clustered_embedding_is_clustered():
    x = cases.clustered_embedding(3000, 64, clusters=10, directions=4)
    # Nearest-neighbour distances are far below the typical distance between rows.
    d = torch.cdist(x[:200], x, compute_mode="donot_use_mm_for_euclid_dist")
    d[torch.arange(200), torch.arange(200)] = float("inf")
    assert d.min(dim=1).values.median() < 0.2 * d[d.isfinite()].median()


def test_timing_and_bandwidth_are_positive():
    timing = time_call(lambda: torch.ones(1000).sum(), "cpu", repeats=3)
    assert 0 < timing.min_s <= timing.median_s and timing.repeats == 3
    assert memory_bandwidth_gbs("cpu", megabytes=8) > 0


def test_run_writes_record_and_table(tmp_path, capsys, monkeypatch):
    small = [lambda: [cases.kcenter_step_case("cpu", 2000, 16)], lambda: [cases.gaussian_blur_case("cpu", 1, 40)]]
    monkeypatch.setattr("anomaly_kernels.bench.runner.all_cases", lambda device, full: small)
    out = tmp_path / "bench.json"
    record = run_benchmarks(["cpu"], output=str(out), progress=False)
    printed = capsys.readouterr().out
    assert "kcenter_step" in printed and "gaussian_blur" in printed and "speed-up" in printed
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(record["results"]))
    assert {r["case"] for r in saved["results"]} == {"kcenter_step", "gaussian_blur"}
    assert all(r["agree"] and r["native_min_ms"] > 0 for r in saved["results"])
    assert saved["machine"]["build"]["torch_running"] == torch.__version__
    assert saved["bandwidth_gbs"]["cpu"] > 0


def test_info_command_prints_build_info(capsys):
    assert main(["info", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["torch_running"] == torch.__version__
    assert printed["cuda_compiled"] == build_info()["cuda_compiled"]


def test_cuda_bench_without_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal only applies without one")
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_build_info_reports_cuda_when_it_was_forced():
    info = build_info()
    if os.environ.get("ANOMALY_KERNELS_CUDA") == "ON":
        # The build was asked to include CUDA: the kernels must be compiled and registered.
        assert info["cuda_compiled"] and info["cuda_registered"]
        assert info["cuda_archs"]
    assert info["cuda_registered"] == info["cuda_compiled"]
    assert info["cpu_threads"] >= 1


def test_every_operator_is_registered_on_cpu_and_wrapped():
    from anomaly_kernels import ops

    names = build_info()["operators"]
    expected = {
        "kcenter_step_", "kcenter_step_to_", "kcenter_greedy_", "sparse_sign_projection", "gaussian_fit",
        "mahalanobis", "kde_log_sum_exp", "separable_blur2d", "banded_resample2d",
    }
    assert set(names) == expected
    assert all(callable(getattr(ops, name)) for name in names)


def test_gpu_bench_without_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal only applies without one")
    assert main(["bench-gpu", "--quick"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_gpu_comparison_check_catches_differences_and_lost_nans():
    from anomaly_kernels.bench.gpu_compare import _relative_check

    check = _relative_check(1e-5)
    ref = torch.tensor([1.0, 2.0, float("nan")])
    assert check(ref.clone(), ref)[0]
    assert not check(torch.tensor([1.0, 2.001, float("nan")]), ref)[0]
    assert not check(torch.tensor([1.0, 2.0, 0.0]), ref)[0]  # a NaN turned into a number


def test_gpu_comparison_reports_a_faster_route_of_the_native_operator():
    """A knob form (another kernel, tile or grid) that beats native by more than the margin is
    named in the row's line; plain forms, other layouts, failed forms and small gains are not."""
    from anomaly_kernels.bench.gpu_compare import ROUTE_MARGIN, _format, faster_route

    forms = {
        "native": {"min_ms": 1.0},
        "batched_matmul": {"min_ms": 0.2},  # a plain form: NOT-FASTEST's business, not a route
        "native_kernel": {"min_ms": 0.5},
        "native_kernel_tiled": {"error": "CUDA out of memory"},
        "native_kernel_packed": {"min_ms": 0.1},  # another input layout, not listed as a route
    }
    routes = ("native_kernel", "native_kernel_tiled")
    assert faster_route(forms, routes) == "native_kernel"
    assert faster_route(forms, ("native_kernel_tiled",)) is None
    assert faster_route({**forms, "native_kernel": {"min_ms": 1.0 - ROUTE_MARGIN / 2}}, routes) is None
    assert faster_route({**forms, "native": {"error": "failed"}}, routes) is None
    row = {"name": "mahalanobis", "size": "32x550x64x64", "floor_ms": 0.6, "forms": forms, "target_ms": 1.2,
           "target_met": False, "native_fastest": False, "faster_route": "native_kernel"}
    assert "ROUTE native_kernel" in _format([row])
    assert "ROUTE" not in _format([{**row, "faster_route": None}])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_gpu_comparison_on_cuda_times_every_form_and_agrees(tmp_path):
    from anomaly_kernels.bench.gpu_compare import run_gpu_comparison

    out = tmp_path / "gpu.json"
    record = run_gpu_comparison(str(out), quick=True, only=["upsample_blur"])
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(record["results"]))
    assert [r["name"] for r in record["results"]] == ["upsample_blur", "upsample_blur"]
    for row in record["results"]:
        assert row["agree"], row["check"]
        assert all(form["min_ms"] > 0 for form in row["forms"].values())
