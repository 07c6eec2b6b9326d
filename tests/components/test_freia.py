"""Tests of the invertible-network blocks: exact inverse, log-determinant, validation, persistence."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch import nn

from anomaly_kernels.components.freia import AllInOneBlock, InvertibleModule, SequenceINN

# ----------------------------------------------------------------------------- helpers


def fc_subnet(c_in: int, c_out: int) -> nn.Module:
    """A small MLP whose output is large enough to make the coupling clearly nonlinear."""
    net = nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))
    with torch.no_grad():
        net[2].weight.mul_(15.0)
        net[2].bias.uniform_(-3.0, 3.0)
    return net


def conv_subnet(c_in: int, c_out: int) -> nn.Module:
    """A small CNN (3x3 convolutions mix neighbouring pixels) with a strong output."""
    net = nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 3, padding=1))
    with torch.no_grad():
        net[2].weight.mul_(15.0)
        net[2].bias.uniform_(-3.0, 3.0)
    return net


def zero_fc_subnet(c_in: int, c_out: int) -> nn.Module:
    """A subnet that outputs zeros: the coupling is then the identity."""
    net = nn.Linear(c_in, c_out)
    nn.init.zeros_(net.weight)
    nn.init.zeros_(net.bias)
    return net


def zero_conv_subnet(c_in: int, c_out: int) -> nn.Module:
    net = nn.Conv2d(c_in, c_out, 1)
    nn.init.zeros_(net.weight)
    nn.init.zeros_(net.bias)
    return net


def wrong_width_subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Linear(c_in, c_out + 1)


def randomise_global_affine(block: AllInOneBlock) -> None:
    """Move the global scale/offset away from their identity initialisation."""
    with torch.no_grad():
        if block.global_scale is not None:
            block.global_scale.add_(0.5 * torch.randn_like(block.global_scale))
        block.global_offset.copy_(torch.randn_like(block.global_offset))


SHAPES = {"1d": (5,), "3d": (4, 3, 5)}
CONDITION_CHANNELS = 3

OPTIONS = {
    "default": {},
    "soft": {"permute_soft": True},
    "gin": {"gin_block": True},
    "householder": {"learned_householder_permutation": 3},
    "reverse_soft": {"reverse_permutation": True, "permute_soft": True},
    "reverse_hard_householder": {"reverse_permutation": True, "learned_householder_permutation": 2},
    "sigmoid": {"global_affine_type": "SIGMOID", "global_affine_init": 0.6},
    "exp": {"global_affine_type": "EXP", "global_affine_init": 1.7},
}


def make_block(shape_key: str, conditioned: bool, options: dict, dtype=torch.float32) -> AllInOneBlock:
    shape = SHAPES[shape_key]
    subnet = fc_subnet if len(shape) == 1 else conv_subnet
    dims_c = [(CONDITION_CHANNELS, *shape[1:])] if conditioned else None
    block = AllInOneBlock([shape], dims_c=dims_c, subnet_constructor=subnet, **options)
    randomise_global_affine(block)
    return block.to(dtype)


def make_inputs(shape_key: str, conditioned: bool, batch: int, dtype=torch.float32):
    shape = SHAPES[shape_key]
    x = torch.randn(batch, *shape, dtype=dtype)
    c = [torch.randn(batch, CONDITION_CHANNELS, *shape[1:], dtype=dtype)] if conditioned else None
    return x, c


def brute_force_log_det(function, x: torch.Tensor) -> torch.Tensor:
    """log|det J| per sample from the full autograd Jacobian of one sample's map, shape (B,)."""
    values = []
    for sample in range(x.shape[0]):
        jacobian = torch.autograd.functional.jacobian(function(sample), x[sample])
        size = x[sample].numel()
        sign, log_abs_det = torch.linalg.slogdet(jacobian.reshape(size, size))
        assert sign != 0
        values.append(log_abs_det)
    return torch.stack(values)


def block_map(block: AllInOneBlock, c, rev: bool = False):
    """Per-sample map for ``brute_force_log_det``: one sample (no batch dim) -> its output."""

    def for_sample(sample: int):
        def apply(v: torch.Tensor) -> torch.Tensor:
            sample_c = None if c is None else [c[0][sample : sample + 1]]
            (out,), _ = block((v.unsqueeze(0),), c=sample_c, rev=rev)
            return out[0]

        return apply

    return for_sample


# ----------------------------------------------------------------------------- exact inverse


@pytest.mark.parametrize("option_key", list(OPTIONS))
@pytest.mark.parametrize("conditioned", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("shape_key", list(SHAPES))
def test_block_inverse_is_exact_and_log_det_negates(shape_key, conditioned, option_key):
    torch.manual_seed(0)
    block = make_block(shape_key, conditioned, OPTIONS[option_key])
    x, c = make_inputs(shape_key, conditioned, batch=3)

    (z,), log_det = block((x,), c=c)
    (x_back,), log_det_rev = block((z,), c=c, rev=True)

    assert z.shape == x.shape and log_det.shape == (3,)
    assert not torch.allclose(z, x, atol=1e-2)  # the block does something
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_det_rev, -log_det, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("option_key", list(OPTIONS))
@pytest.mark.parametrize("shape_key", list(SHAPES))
def test_block_inverse_is_exact_in_float64(shape_key, option_key):
    torch.manual_seed(1)
    block = make_block(shape_key, True, OPTIONS[option_key], dtype=torch.float64)
    x, c = make_inputs(shape_key, True, batch=2, dtype=torch.float64)
    (z,), log_det = block((x,), c=c)
    (x_back,), log_det_rev = block((z,), c=c, rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_det_rev, -log_det, atol=1e-12, rtol=0)
    # The inverse also holds starting from z.
    (z_again,), _ = block((x_back,), c=c)
    torch.testing.assert_close(z_again, z, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- log-determinant


@pytest.mark.parametrize("option_key", list(OPTIONS))
@pytest.mark.parametrize("conditioned", [False, True], ids=["uncond", "cond"])
def test_log_det_matches_brute_force_jacobian_1d(conditioned, option_key):
    torch.manual_seed(2)
    dims_c = [(CONDITION_CHANNELS,)] if conditioned else None
    block = AllInOneBlock([(4,)], dims_c=dims_c, subnet_constructor=fc_subnet, **OPTIONS[option_key])
    randomise_global_affine(block)
    block = block.double()
    x = torch.randn(2, 4, dtype=torch.float64)
    c = [torch.randn(2, CONDITION_CHANNELS, dtype=torch.float64)] if conditioned else None

    (z,), log_det = block((x,), c=c)
    expected = brute_force_log_det(block_map(block, c), x)
    torch.testing.assert_close(log_det, expected, atol=1e-10, rtol=0)

    # The inverse map's Jacobian at z has the negated log-determinant.
    (_,), log_det_rev = block((z,), c=c, rev=True)
    expected_rev = brute_force_log_det(block_map(block, c, rev=True), z)
    torch.testing.assert_close(log_det_rev, expected_rev, atol=1e-10, rtol=0)


@pytest.mark.parametrize("option_key", ["default", "soft", "householder", "sigmoid", "reverse_soft"])
def test_log_det_matches_brute_force_jacobian_3d(option_key):
    # The global scale acts on every pixel: its log-det contribution scales with H * W.
    torch.manual_seed(3)
    block = make_block("3d", True, OPTIONS[option_key], dtype=torch.float64)
    x, c = make_inputs("3d", True, batch=2, dtype=torch.float64)
    (_,), log_det = block((x,), c=c)
    expected = brute_force_log_det(block_map(block, c), x)
    torch.testing.assert_close(log_det, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape_key", list(SHAPES))
def test_gin_block_is_volume_preserving_but_not_orthogonal(shape_key):
    torch.manual_seed(4)
    block = make_block(shape_key, False, {"gin_block": True}, dtype=torch.float64)
    assert block.global_scale is None  # GIN keeps the global scale at 1
    x, _ = make_inputs(shape_key, False, batch=2, dtype=torch.float64)
    (_,), log_det = block((x,))
    torch.testing.assert_close(log_det, torch.zeros(2, dtype=torch.float64), atol=0, rtol=0)
    brute_force = brute_force_log_det(block_map(block, None), x)
    torch.testing.assert_close(brute_force, torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    # The coupling really scales: the Jacobian is not orthogonal, only its determinant is 1.
    size = x[0].numel()
    jacobian = torch.autograd.functional.jacobian(block_map(block, None)(0), x[0]).reshape(size, size)
    assert (jacobian @ jacobian.T - torch.eye(size, dtype=torch.float64)).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("affine_type", "init"), [("SOFTPLUS", 1.0), ("SOFTPLUS", 0.3), ("SIGMOID", 0.6), ("SIGMOID", 1.5), ("EXP", 2.5)]
)
@pytest.mark.parametrize("shape_key", list(SHAPES))
def test_initial_global_scale_and_permutation_by_hand(shape_key, affine_type, init):
    # With a zero subnet the coupling is the identity, so a fresh block is z = P (init * x).
    torch.manual_seed(5)
    shape = SHAPES[shape_key]
    subnet = zero_fc_subnet if len(shape) == 1 else zero_conv_subnet
    block = AllInOneBlock(
        [shape], subnet_constructor=subnet, global_affine_type=affine_type, global_affine_init=init
    ).double()
    permutation = block.w_perm
    assert torch.equal(permutation.sum(0), torch.ones(shape[0], dtype=torch.float64))
    assert torch.equal(permutation.sum(1), torch.ones(shape[0], dtype=torch.float64))
    source_channel = permutation.argmax(dim=1)  # z[:, i] comes from x[:, source_channel[i]]

    x = torch.randn(2, *shape, dtype=torch.float64)
    (z,), log_det = block((x,))
    # The free parameter is stored in float32, hence the relative tolerance.
    torch.testing.assert_close(z, init * x[:, source_channel], atol=1e-12, rtol=1e-6)
    expected_log_det = math.prod(shape) * math.log(init)  # C * H * W * log(init)
    torch.testing.assert_close(
        log_det, torch.full((2,), expected_log_det, dtype=torch.float64), atol=math.prod(shape) * 1e-6, rtol=0
    )


def test_global_affine_type_is_case_insensitive():
    block = AllInOneBlock([(4,)], subnet_constructor=fc_subnet, global_affine_type="exp", global_affine_init=2.0)
    assert block.global_affine_type == "EXP"
    torch.testing.assert_close(torch.exp(block.global_scale), torch.full((1, 4), 2.0))


# ----------------------------------------------------------------------------- permutations


def test_hard_permutation_is_a_permutation_and_soft_is_a_rotation():
    torch.manual_seed(6)
    hard = AllInOneBlock([(8,)], subnet_constructor=fc_subnet).w_perm
    soft = AllInOneBlock([(8,)], subnet_constructor=fc_subnet, permute_soft=True).w_perm
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    ones = torch.ones(8, dtype=hard.dtype)
    assert torch.equal(hard.sum(0), ones) and torch.equal(hard.sum(1), ones)
    torch.testing.assert_close(soft @ soft.T, torch.eye(8, dtype=soft.dtype), atol=1e-12, rtol=0)
    assert (soft.abs() > 1e-3).sum() > 8  # dense, not a permutation


def test_permutations_are_reproducible_under_manual_seed():
    def build(seed):
        torch.manual_seed(seed)
        return AllInOneBlock([(6,)], subnet_constructor=fc_subnet, permute_soft=True, learned_householder_permutation=2)

    first, again, other = build(7), build(7), build(8)
    assert torch.equal(first.w_perm, again.w_perm)
    assert torch.equal(first.householder_vectors, again.householder_vectors)
    assert not torch.equal(first.w_perm, other.w_perm)


def test_householder_mixing_stays_orthogonal_and_learns():
    torch.manual_seed(9)
    block = AllInOneBlock([(6,)], subnet_constructor=fc_subnet, learned_householder_permutation=4)
    mixing = block._mixing_matrix()
    torch.testing.assert_close(mixing @ mixing.T, torch.eye(6), atol=1e-5, rtol=0)
    assert not torch.allclose(mixing, block.w_perm.to(mixing.dtype))
    (z,), log_det = block((torch.randn(3, 6),))
    (z.square().sum() - log_det.sum()).backward()
    assert block.householder_vectors.grad is not None and block.householder_vectors.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- autograd, mutation, persistence


def test_gradients_reach_every_parameter():
    torch.manual_seed(10)
    block = make_block("3d", True, {"learned_householder_permutation": 1})
    x, c = make_inputs("3d", True, batch=2)
    x.requires_grad_(True)
    (z,), log_det = block((x,), c=c)
    (0.5 * z.square().sum() - log_det.sum()).backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("rev", [False, True])
def test_inputs_are_not_mutated(rev):
    torch.manual_seed(11)
    flow = SequenceINN(4, 3, 5)
    flow.append(AllInOneBlock, cond=0, cond_shape=(2, 3, 5), subnet_constructor=conv_subnet)
    flow.append(AllInOneBlock, subnet_constructor=conv_subnet, permute_soft=True)
    x = torch.randn(2, 4, 3, 5)
    c = [torch.randn(2, 2, 3, 5)]
    x_before, c_before = x.clone(), c[0].clone()
    flow(x, c=c, rev=rev)
    assert torch.equal(x, x_before) and torch.equal(c[0], c_before)


def test_state_dict_round_trip_into_fresh_block():
    torch.manual_seed(12)
    block = make_block("3d", True, {"permute_soft": True, "learned_householder_permutation": 2})
    x, c = make_inputs("3d", True, batch=2)
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    buffer.seek(0)

    torch.manual_seed(999)  # the fresh block draws another mixing matrix and other weights
    fresh = AllInOneBlock(
        [SHAPES["3d"]],
        dims_c=[(CONDITION_CHANNELS, 3, 5)],
        subnet_constructor=conv_subnet,
        permute_soft=True,
        learned_householder_permutation=2,
    )
    assert not torch.equal(fresh.w_perm, block.w_perm)
    fresh.load_state_dict(torch.load(buffer))
    assert "w_perm" in fresh.state_dict()
    torch.testing.assert_close(fresh((x,), c=c)[0][0], block((x,), c=c)[0][0], atol=0, rtol=0)


def test_sequence_inn_is_picklable():
    torch.manual_seed(13)
    flow = SequenceINN(5)
    flow.append(AllInOneBlock, cond=0, cond_shape=(3,), subnet_constructor=fc_subnet, permute_soft=True)
    flow.append(AllInOneBlock, subnet_constructor=fc_subnet, learned_householder_permutation=2)
    x, c = torch.randn(4, 5), [torch.randn(4, 3)]
    restored = pickle.loads(pickle.dumps(flow))
    z, log_det = flow(x, c=c)
    z_restored, log_det_restored = restored(x, c=c)
    assert torch.equal(z, z_restored) and torch.equal(log_det, log_det_restored)


# ----------------------------------------------------------------------------- SequenceINN


class ScaleByTwo(InvertibleModule):
    """A minimal block written against the base-class contract: z = 2 x."""

    def forward(self, x_or_z, c=None, rev=False, jac=True):
        x = x_or_z[0]
        factor = 0.5 if rev else 2.0
        log_det = torch.full((x.shape[0],), math.log(factor) * x[0].numel(), dtype=x.dtype)
        return (x * factor,), log_det

    def output_dims(self, input_dims):
        return list(input_dims)


def test_invertible_module_is_abstract_and_subclassable():
    with pytest.raises(TypeError):
        InvertibleModule([(3,)])
    block = ScaleByTwo([(3, 2)])
    assert block.dims_in == [(3, 2)] and block.dims_c == []
    flow = SequenceINN(3, 2)
    flow.append(ScaleByTwo)
    flow.append(ScaleByTwo)
    x = torch.randn(2, 3, 2)
    z, log_det = flow(x)
    torch.testing.assert_close(z, 4 * x)
    torch.testing.assert_close(log_det, torch.full((2,), 6 * math.log(4.0)))


def test_sequence_runs_blocks_in_order_and_sums_log_dets():
    torch.manual_seed(14)
    flow = SequenceINN(5)
    flow.append(AllInOneBlock, cond=1, cond_shape=(2,), subnet_constructor=fc_subnet)
    flow.append(AllInOneBlock, subnet_constructor=fc_subnet, permute_soft=True)
    flow.append(AllInOneBlock, cond=0, cond_shape=(3,), subnet_constructor=fc_subnet, global_affine_init=0.8)
    for block in flow:
        randomise_global_affine(block)
    x = torch.randn(4, 5)
    c = [torch.randn(4, 3), torch.randn(4, 2)]

    z, log_det = flow(x, c=c)

    (h1,), j1 = flow[0]((x,), c=[c[1]])
    (h2,), j2 = flow[1]((h1,))
    (h3,), j3 = flow[2]((h2,), c=[c[0]])
    torch.testing.assert_close(z, h3, atol=0, rtol=0)
    torch.testing.assert_close(log_det, j1 + j2 + j3, atol=1e-6, rtol=0)

    x_back, log_det_rev = flow(z, c=c, rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_det_rev, -log_det, atol=1e-5, rtol=0)


def test_sequence_log_det_matches_brute_force():
    torch.manual_seed(15)
    flow = SequenceINN(4)
    for _ in range(3):
        flow.append(AllInOneBlock, cond=0, cond_shape=(2,), subnet_constructor=fc_subnet, permute_soft=True)
    for block in flow:
        randomise_global_affine(block)
    flow = flow.double()
    x = torch.randn(2, 4, dtype=torch.float64)
    c = [torch.randn(2, 2, dtype=torch.float64)]
    _, log_det = flow(x, c=c)

    def for_sample(sample):
        return lambda v: flow(v.unsqueeze(0), c=[c[0][sample : sample + 1]])[0][0]

    torch.testing.assert_close(log_det, brute_force_log_det(for_sample, x), atol=1e-10, rtol=0)


def test_sequence_container_protocol_and_output_dims():
    flow = SequenceINN(6, 2, 2, force_tuple_output=True)
    assert len(flow) == 0
    flow.append(AllInOneBlock, subnet_constructor=conv_subnet)
    flow.append(AllInOneBlock, subnet_constructor=conv_subnet)
    assert len(flow) == 2
    assert isinstance(flow[1], AllInOneBlock) and flow[0] is not flow[1]
    assert [type(block) for block in flow] == [AllInOneBlock, AllInOneBlock]
    assert flow[1].dims_in == [(6, 2, 2)]
    assert flow.output_dims([(6, 2, 2)]) == [(6, 2, 2)]
    out, log_det = flow(torch.randn(3, 6, 2, 2))
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == (3, 6, 2, 2)
    assert log_det.shape == (3,)


def test_empty_sequence_is_the_identity():
    flow = SequenceINN(3)
    x = torch.randn(2, 3)
    z, log_det = flow(x)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(2))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"subnet_constructor": None}, ValueError, "subnet_constructor is required"),
        ({"subnet_constructor": 3}, TypeError, "subnet_constructor must be callable"),
        ({"global_affine_type": "RELU"}, ValueError, "global_affine_type must be one of"),
        ({"global_affine_init": 0.0}, ValueError, "global_affine_init"),
        ({"global_affine_init": -1.0}, ValueError, "global_affine_init"),
        ({"global_affine_type": "SIGMOID", "global_affine_init": 2.0}, ValueError, r"\(0, 2\)"),
        ({"affine_clamping": 0.0}, ValueError, "affine_clamping"),
        ({"learned_householder_permutation": -1}, ValueError, "learned_householder_permutation"),
        ({"gin_block": True, "global_affine_init": 0.5}, ValueError, "gin_block"),
    ],
)
def test_block_constructor_validation(kwargs, error, match):
    arguments = {"subnet_constructor": fc_subnet, **kwargs}
    with pytest.raises(error, match=match):
        AllInOneBlock([(4,)], **arguments)


@pytest.mark.parametrize(
    ("dims_in", "dims_c", "match"),
    [
        ([(1,)], None, "at least 2 channels"),
        ([(1, 4, 4)], None, "at least 2 channels"),
        ([(4,), (4,)], None, "exactly one input"),
        ([], None, "at least one input shape"),
        ([(4, 3, 3)], [(2, 3, 4)], "same spatial dims"),
        ([(4,)], [(2, 3)], "same spatial dims"),
        ([(4, 0)], None, "sizes >= 1"),
    ],
)
def test_block_shape_validation(dims_in, dims_c, match):
    with pytest.raises(ValueError, match=match):
        AllInOneBlock(dims_in, dims_c=dims_c, subnet_constructor=fc_subnet)


def test_block_forward_validation():
    unconditioned = AllInOneBlock([(4,)], subnet_constructor=fc_subnet)
    conditioned = AllInOneBlock([(4,)], dims_c=[(2,)], subnet_constructor=fc_subnet)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="has no condition"):
        unconditioned((x,), c=[torch.randn(3, 2)])
    with pytest.raises(ValueError, match="pass c="):
        conditioned((x,))
    with pytest.raises(ValueError, match=r"c\[0\] must have shape \(3, 2\)"):
        conditioned((x,), c=[torch.randn(3, 5)])
    with pytest.raises(ValueError, match=r"c\[0\] must have shape \(3, 2\)"):
        conditioned((x,), c=[torch.randn(2, 2)])
    with pytest.raises(TypeError, match="tuple holding one tensor"):
        unconditioned(x)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        unconditioned((torch.randn(3, 5),))
    with pytest.raises(TypeError, match="dtype"):
        unconditioned((x.double(),))
    wrong = AllInOneBlock([(4,)], subnet_constructor=wrong_width_subnet)
    with pytest.raises(ValueError, match="subnet built by subnet_constructor"):
        wrong((x,))


def test_sequence_validation():
    flow = SequenceINN(4)
    with pytest.raises(ValueError, match="cond and cond_shape"):
        flow.append(AllInOneBlock, cond=0, subnet_constructor=fc_subnet)
    with pytest.raises(ValueError, match="cond and cond_shape"):
        flow.append(AllInOneBlock, cond_shape=(2,), subnet_constructor=fc_subnet)
    with pytest.raises(TypeError, match="InvertibleModule subclass"):
        flow.append(nn.Linear, in_features=4, out_features=4)
    with pytest.raises(TypeError, match="input shape as ints"):
        SequenceINN((4, 2, 2))
    assert len(flow) == 0  # failed appends leave the chain unchanged

    flow.append(AllInOneBlock, subnet_constructor=fc_subnet)
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="no block of this SequenceINN is conditioned"):
        flow(x, c=[torch.randn(2, 2)])
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        flow(torch.randn(2, 3))

    flow.append(AllInOneBlock, cond=1, cond_shape=(2,), subnet_constructor=fc_subnet)
    with pytest.raises(ValueError, match="pass c"):
        flow(x)
    with pytest.raises(ValueError, match="at least 2 tensor"):
        flow(x, c=[torch.randn(2, 2)])
    with pytest.raises(ValueError, match="input_dims"):
        flow.output_dims([(5,)])
