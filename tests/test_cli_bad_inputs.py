"""A tour of bad command-line inputs: each ends in one ``error:`` line naming its flag, exit code 2.

Every refusal must come before the expensive work (data generation, training, scoring,
benchmark runs): those are replaced by functions that fail the test if they are reached.
"""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from anomaly_kernels import __version__, build_info
from anomaly_kernels.cli import IMAGE_SIZE_RANGE, _parser, main
from anomaly_kernels.pipeline import fit as fit_module
from anomaly_kernels.pipeline import fit_and_test
from anomaly_kernels.pipeline.checkpoint import state_checksum
from anomaly_kernels.pipeline.fit import CHECKPOINT_KEY, save_checkpoint
from anomaly_kernels.pipeline.predict import load_model

from support.lightning_noise import LIGHTNING_NOISE

pytestmark = LIGHTNING_NOISE


def _forbidden(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} started although the input was bad")

    return fail


@pytest.fixture
def no_expensive_work(monkeypatch):
    monkeypatch.setattr("anomaly_kernels.pipeline.fit.generate_synthetic_dataset", _forbidden("data generation"))
    monkeypatch.setattr("anomaly_kernels.pipeline.fit.make_trainer", _forbidden("training"))
    monkeypatch.setattr("anomaly_kernels.pipeline.predict.make_trainer", _forbidden("scoring"))
    monkeypatch.setattr("anomaly_kernels.bench.run_benchmarks", _forbidden("the benchmark"))
    monkeypatch.setattr("anomaly_kernels.bench.distributed.run_distributed_benchmark", _forbidden("the benchmark"))
    monkeypatch.setattr("anomaly_kernels.bench.gpu_compare.run_gpu_comparison", _forbidden("the benchmark"))


def _refused(capsys, argv, flag):
    """Run the command; it must print exactly one ``error:`` line naming ``flag`` and return 2."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert flag in lines[0], lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real PaDiM checkpoint, as small as a fit makes it."""
    output = tmp_path_factory.mktemp("run")
    result = fit_and_test(
        model="padim", output_dir=output, image_size=32, backbone="resnet18", pretrained="none", progress=False,
        model_options={"layers": ("layer1",), "n_features": 8},
    )
    return result.checkpoint


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint\n")
    return path


# --- fit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_data", [False, True])
@pytest.mark.parametrize("size", [1, 7, 8, 31, 1025, 10000, -3])
def test_image_size_is_bounded_with_and_without_data(tmp_path, capsys, no_expensive_work, with_data, size):
    data = ["--data", tmp_path, "--category", "x"] if with_data else []
    line = _refused(capsys, ["fit", *data, "--image-size", size, "--output", tmp_path / "out"], "--image-size")
    assert f"from {IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]}" in line
    assert not (tmp_path / "out").exists()


def test_image_size_bounds_of_the_command_line_and_the_pipeline_agree():
    assert IMAGE_SIZE_RANGE == fit_module.IMAGE_SIZE_RANGE
    with pytest.raises(ValueError, match="image size"):
        fit_and_test(image_size=16, progress=False)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "many"], "--batch-size"),
        (["--seed", "-1"], "--seed"),
        (["--model", "stfpm"], "--model"),
        (["--pretrained", "sometimes"], "--pretrained"),
        (["--backbone", "resnet999"], "--backbone"),
        (["--category", "marble"], "--category"),
    ],
)
def test_bad_fit_options(tmp_path, capsys, no_expensive_work, args, flag):
    _refused(capsys, ["fit", *args, "--output", tmp_path / "out"], flag)
    assert not (tmp_path / "out").exists()


def test_bad_data_folders(tmp_path, capsys, no_expensive_work):
    out = tmp_path / "out"
    assert "not a directory" in _refused(capsys, ["fit", "--data", tmp_path / "missing", "--category", "x",
                                                  "--output", out], "--data")
    assert "required" in _refused(capsys, ["fit", "--data", tmp_path, "--output", out], "--category")
    _refused(capsys, ["fit", "--data", tmp_path, "--category", "bottle", "--output", out], "--category")
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    assert "no images" in _refused(capsys, ["fit", "--data", tmp_path, "--category", "bottle", "--output", out],
                                   "--category")
    assert not out.exists()


def test_output_naming_a_file_is_refused_before_fitting(tmp_path, capsys, no_expensive_work, text_file):
    assert "not a folder" in _refused(capsys, ["fit", "--output", text_file], "--output")
    assert "is a file" in _refused(capsys, ["fit", "--output", text_file / "run"], "--output")
    (tmp_path / "run" / "model.ckpt").mkdir(parents=True)
    assert "is a folder" in _refused(capsys, ["fit", "--output", tmp_path / "run"], "--output")


@pytest.mark.parametrize("content", ["text", "empty", "truncated", "pickled object", "not a state dict"])
def test_weights_that_are_not_a_weights_file(tmp_path, capsys, no_expensive_work, content):
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("these are not weights\n")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif content == "pickled object":
        torch.save({"conv1.weight": argparse.Namespace(a=1)}, path)
    else:
        torch.save([1, 2, 3], path)
    _refused(capsys, ["fit", "--model", "padim", "--weights", path, "--output", tmp_path / "out"], "--weights")
    assert not (tmp_path / "out").exists()


def test_weights_of_another_architecture(tmp_path, capsys, no_expensive_work):
    path = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    line = _refused(capsys, ["fit", "--model", "padim", "--weights", path, "--output", tmp_path / "out"], "--weights")
    assert "conv1.weight" in line and "another architecture" in line
    assert "not found" in _refused(capsys, ["fit", "--weights", tmp_path / "none.pth"], "--weights")


def test_accelerator_gpu_without_a_gpu(tmp_path, capsys, no_expensive_work):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _refused(capsys, ["fit", "--accelerator", "gpu", "--output", tmp_path], "--accelerator")
    _refused(capsys, ["bench", "--device", "cuda"], "--device")


def _run_cli(args, tmp_path, **env):
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **env}
    return subprocess.run([sys.executable, "-m", "anomaly_kernels", *map(str, args)], capture_output=True, text=True,
                          timeout=240, env=environment, cwd=tmp_path)


def test_pretrained_download_offline_is_one_line(tmp_path):
    result = _run_cli(["fit", "--model", "padim", "--pretrained", "download", "--output", tmp_path / "out"],
                      tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --pretrained:"), result.stderr
    assert "resnet18" in lines[0]
    assert not (tmp_path / "out" / "synthetic").exists()


# --- predict ---------------------------------------------------------------------------------


def _damaged(kind, checkpoint, tmp_path):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "text":
        path.write_text("model weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif kind == "folder":
        path.mkdir()
    else:
        content = torch.load(checkpoint, weights_only=True)
        if kind == "another model":  # a PaDiM checkpoint marked as PatchCore / DFKDE
            content[CHECKPOINT_KEY]["model"] = "patchcore"
        elif kind == "another model's settings":
            content["hyper_parameters"]["coreset_sampling_ratio"] = 0.1
        elif kind == "missing weights":  # without a checksum, which would report the change first
            content["state_dict"].popitem()
            del content[CHECKPOINT_KEY]["state_sha256"]
        elif kind == "changed weights":
            content["state_dict"]["model.gaussian.mean"][0, 0] += 1
        elif kind == "no metadata":  # a Lightning checkpoint of something else
            del content[CHECKPOINT_KEY]
            del content["state_dict"]["model.gaussian.inv_covariance"]
        elif kind == "code":  # an object torch.load(weights_only=True) refuses to rebuild
            content["extra"] = argparse.Namespace(run="code")
        torch.save(content, path)
    return path


@pytest.mark.parametrize(
    "kind, says",
    [
        ("text", "not a file written by torch.save"),
        ("empty", "empty"),
        ("truncated", "truncated"),
        ("folder", "not a file"),
        ("another model", "does not take"),
        ("another model's settings", "coreset_sampling_ratio"),
        ("missing weights", "do not fit"),
        ("changed weights", "corrupted"),
        ("no metadata", "neither written by 'anomaly-kernels fit'"),
        ("code", "could run code"),
    ],
)
def test_checkpoints_predict_cannot_use(tmp_path, capsys, no_expensive_work, checkpoint, kind, says):
    path = _damaged(kind, checkpoint, tmp_path)
    line = _refused(capsys, ["predict", "--checkpoint", path, "--input", checkpoint.parent / "synthetic",
                             "--output", tmp_path / "out"], "--checkpoint")
    assert says in line
    assert not (tmp_path / "out").exists()


def test_predict_checks_output_and_input_before_scoring(tmp_path, capsys, no_expensive_work, checkpoint, text_file):
    images = checkpoint.parent / "synthetic" / "carpet_like" / "test" / "hole"
    _refused(capsys, ["predict", "--checkpoint", checkpoint, "--input", images, "--output", text_file], "--output")
    _refused(capsys, ["predict", "--checkpoint", checkpoint, "--input", tmp_path / "none", "--output", tmp_path / "o"],
             "--input")
    _refused(capsys, ["predict", "--checkpoint", tmp_path / "none.ckpt", "--input", images], "--checkpoint")
    _refused(capsys, ["predict", "--checkpoint", checkpoint, "--input", images, "--batch-size", "0"], "--batch-size")
    assert "--input" in _refused(capsys, ["predict", "--checkpoint", checkpoint], "required")


def test_a_text_checkpoint_through_the_installed_command(tmp_path, text_file):
    result = _run_cli(["predict", "--checkpoint", text_file, "--input", tmp_path], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --checkpoint: checkpoint {text_file} cannot be read by torch.load: not a file written by torch.save"
    ]


# --- benchmarks ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["bench"], ["bench-gpu"], ["bench-distributed"]])
def test_benchmark_output_is_checked_before_the_run(tmp_path, capsys, no_expensive_work, command):
    assert "does not exist" in _refused(capsys, [*command, "--output", "/missing/dir/b.json"], "--output")
    assert "is a folder" in _refused(capsys, [*command, "--output", tmp_path], "--output")


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--processes", "0"], "--processes"),
        (["--processes", "2", "-1"], "--processes"),
        (["--rows", "10", "--coreset", "100"], "--coreset"),
        (["--rows", "0"], "--rows"),
        (["--dims", "0"], "--dims"),
    ],
)
def test_bad_distributed_benchmark_sizes(capsys, no_expensive_work, args, flag):
    _refused(capsys, ["bench-distributed", *args], flag)


def test_unknown_gpu_benchmark_operation(capsys, no_expensive_work):
    assert "gaussian_blur" in _refused(capsys, ["bench-gpu", "--only", "gaussian_blurr"], "--only")


# --- help, version, info ---------------------------------------------------------------------


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_and_option_is_described_with_its_default(capsys):
    parser = _parser()
    commands = _subparsers(parser)
    assert set(commands) == {"bench", "bench-gpu", "bench-distributed", "fit", "predict", "export", "info"}
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings}"
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert sub.description.split(".")[0] in " ".join(text.split())
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE images per batch (default: 16)" in text
    assert f"from {IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]} (default: 128)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith(f"anomaly-kernels {__version__}")


def test_info_is_a_table_and_json_on_request(capsys):
    assert main(["info"]) == 0
    table = capsys.readouterr().out
    info = build_info()
    assert table.splitlines()[0] == f"anomaly_kernels {__version__}"
    assert any(line.startswith("torch (running)") and line.endswith(info["torch_running"]) for line in table.splitlines())
    assert all(op in table for op in info["operators"])
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(info))


# --- crash-safe outputs ----------------------------------------------------------------------


def test_interrupted_synthetic_generation_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    from anomaly_kernels.data import synthetic

    render = synthetic.render_synthetic_sample
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_synthetic_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_synthetic_dataset(tmp_path, categories=["grid_like"], image_size=32)
    assert list(tmp_path.iterdir()) == []  # neither a category folder nor a leftover partial one
    monkeypatch.setattr(synthetic, "render_synthetic_sample", render)
    written = synthetic.generate_synthetic_dataset(tmp_path, categories=["grid_like"], n_train=4, image_size=32)
    assert len(list((written["grid_like"] / "train" / "good").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["grid_like"]


def test_overwriting_a_synthetic_category_keeps_other_files(tmp_path):
    from anomaly_kernels.data import generate_synthetic_dataset

    small = dict(n_train=2, n_test_good=1, n_test_defect_per_type=1, image_size=32)
    category = generate_synthetic_dataset(tmp_path, categories=["grid_like"], **small)["grid_like"]
    (category / "README.txt").write_text("mine")
    generate_synthetic_dataset(tmp_path, categories=["grid_like"], **{**small, "n_train": 3}, overwrite=True)
    assert (category / "README.txt").read_text() == "mine"
    assert len(list((category / "train" / "good").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_like"]


class _Module(torch.nn.Module):
    def on_save_checkpoint(self, checkpoint):
        checkpoint["hook"] = True


class _Trainer:
    def __init__(self, fail):
        self.lightning_module = _Module()
        self.fail = fail

    def save_checkpoint(self, path, weights_only=False):
        content = {"state_dict": {}}
        self.lightning_module.on_save_checkpoint(content)
        torch.save(content, path)
        if self.fail:
            with open(path, "ab") as f:
                f.write(b"half")
            raise KeyboardInterrupt


def test_the_checkpoint_is_written_once_then_renamed(tmp_path):
    target = tmp_path / "model.ckpt"
    save_checkpoint(_Trainer(fail=False), target, {"model": "padim", "image_size": 32})
    saved = torch.load(target, weights_only=True)
    assert saved["hook"] is True
    assert saved[CHECKPOINT_KEY] == {"model": "padim", "image_size": 32, "state_sha256": state_checksum({})}
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_Trainer(fail=True), target, {"model": "dfkde", "image_size": 32})
    assert target.read_bytes() == before  # the interrupted save left the previous checkpoint whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_checkpoints_load_with_weights_only(monkeypatch, checkpoint):
    calls = []
    load = torch.load

    def recording(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording)
    module, metadata = load_model(checkpoint)
    assert metadata["model"] == "padim" and calls and all(flag is True for flag in calls)
