"""Every native operator through the same checks, driven by the table in ``conformance.py``.

Test ids name the operator and the device (``test_compile[mahalanobis-cpu]``).
"""

from __future__ import annotations

import pytest
import torch
from conformance import TABLE, Entry, Sample, clone_args, result_tensors, written_positions
from conftest import DEVICES

from anomaly_kernels import build_info

NAMES = sorted(TABLE)
GRAD_NAMES = sorted(name for name, entry in TABLE.items() if entry.grad_args)

by_operator = pytest.mark.parametrize("name", NAMES)
on_each_device = pytest.mark.parametrize("device", DEVICES)


def _operator(name: str):
    return getattr(torch.ops.anomaly_kernels, name).default


def _assert_match(entry: Entry, sample: Sample, got: list, expected: list, what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} tensors, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(got, expected)):
        rtol, atol = entry.tolerances[b.dtype] if b.dtype.is_floating_point else (0.0, 0.0)
        torch.testing.assert_close(
            a.cpu(), b.cpu(), rtol=rtol, atol=atol, equal_nan=True,
            msg=lambda m: f"{entry.name} [{sample.label}] {what} {i}: {m}",
        )


def _run(entry: Entry, sample: Sample, call) -> tuple:
    """Call on fresh copies; return (outputs, the mutated arguments afterwards)."""
    args = clone_args(sample.args)
    outputs = result_tensors(call(*args))
    return outputs, [args[i] for i in written_positions(entry.name)]


def test_every_registered_operator_has_an_entry():
    prefix = "anomaly_kernels::"
    registered = {s.name[len(prefix):] for s in torch._C._jit_get_all_schemas() if s.name.startswith(prefix)}
    assert registered == set(build_info()["operators"])  # every schema has a CPU kernel
    assert set(TABLE) == registered, (
        f"operators without an entry: {sorted(registered - set(TABLE))}, "
        f"entries without an operator: {sorted(set(TABLE) - registered)}"
    )


@by_operator
def test_backward_is_tested_where_registered(name):
    has_backward = torch._C._dispatch_has_kernel_for_dispatch_key(f"anomaly_kernels::{name}", "Autograd")
    assert has_backward == bool(TABLE[name].grad_args)


@on_each_device
@by_operator
def test_matches_reference(name, device):
    """Outputs and in-place updates equal the reference (on the CPU) within the entry's
    tolerances, on every sample; arguments the schema does not mark as written are untouched."""
    entry = TABLE[name]
    op = _operator(name)
    written = written_positions(name)
    for dtype in entry.dtypes_on(device):
        for sample in entry.samples(device, dtype):
            before = clone_args(sample.args)
            args = clone_args(sample.args)
            outputs = result_tensors(op(*args))
            ref_args = clone_args(sample.args, "cpu")
            expected = result_tensors(entry.reference(*ref_args))
            _assert_match(entry, sample, outputs, expected, "output")
            updated, expected_updated = [args[i] for i in written], [ref_args[i] for i in written]
            _assert_match(entry, sample, updated, expected_updated, "updated argument")
            for i, (arg, saved) in enumerate(zip(args, before)):
                if isinstance(arg, torch.Tensor) and i not in written:
                    assert torch.equal(arg, saved), f"{name} [{sample.label}] modified argument {i}"


def _is_edge(sample: Sample) -> bool:
    """An empty or non-contiguous tensor argument: where fake kernels and strides go wrong."""
    return any(isinstance(a, torch.Tensor) and (a.numel() == 0 or not a.is_contiguous()) for a in sample.args)


@on_each_device
@by_operator
def test_opcheck(name, device):
    """Schema (mutations declared), fake kernel, autograd registration and AOT dispatch, on the
    entry's first samples and its empty or strided ones."""
    entry = TABLE[name]
    for dtype in entry.dtypes_on(device):
        samples = entry.samples(device, dtype)
        for sample in samples[: entry.opcheck_samples] + [s for s in samples[entry.opcheck_samples :] if _is_edge(s)]:
            torch.library.opcheck(_operator(name), clone_args(sample.args))


@on_each_device
@by_operator
def test_compile(name, device):
    """The operator traces into one graph (fake kernel, functionalised mutations) and the compiled
    call computes what the eager call does, in-place updates included."""
    entry = TABLE[name]
    op = _operator(name)
    sample = entry.samples(device, entry.dtypes_on(device)[0])[0]
    torch._dynamo.reset()  # each operator compiles afresh, never hitting the recompile limit
    compiled = torch.compile(lambda *args: op(*args), fullgraph=True, backend="aot_eager")
    outputs, updated = _run(entry, sample, compiled)
    eager_outputs, eager_updated = _run(entry, sample, op)
    _assert_match(entry, sample, outputs, eager_outputs, "compiled output")
    _assert_match(entry, sample, updated, eager_updated, "compiled update")


@on_each_device
@pytest.mark.parametrize("name", GRAD_NAMES)
def test_gradcheck(name, device):
    """Numerical gradcheck of the backward, and the gradient equals the reference's."""
    entry = TABLE[name]
    op = _operator(name)
    for sample in entry.grad_samples(device):
        args = [a.detach().clone().requires_grad_(i in entry.grad_args) if isinstance(a, torch.Tensor) else a
                for i, a in enumerate(sample.args)]
        inputs = tuple(args[i] for i in entry.grad_args)

        def call(*differentiable):
            full = list(args)
            for i, value in zip(entry.grad_args, differentiable):
                full[i] = value
            return op(*full)

        assert torch.autograd.gradcheck(call, inputs, fast_mode=True), sample.label
        grad_out = torch.randn_like(call(*inputs))
        native = torch.autograd.grad(call(*inputs), inputs, grad_out)
        ref_args = list(args)
        expected = torch.autograd.grad(entry.reference(*ref_args), inputs, grad_out)
        for a, b in zip(native, expected):
            torch.testing.assert_close(a, b, msg=lambda m: f"{name} [{sample.label}] gradient: {m}")


@on_each_device
@by_operator
def test_bench_case(name, device):
    """The operator's benchmark case, at a test size, runs and agrees with its reference."""
    case = TABLE[name].bench(device)
    agree, detail = case.check(case.native(), case.reference())
    assert agree, f"{case.name}: {detail}"
