"""The README is true to the letter: its Python snippets run, its commands parse.

Every ```python block is executed, in order, in one namespace, in a temporary folder, offline,
except a block preceded by ``<!-- not executed: <reason> -->`` (it needs a launcher, a GPU or
the network): those are listed explicitly and must give their reason. Every ``anomaly-kernels``
command of a ```sh block must parse with the command line's own parser.
"""

import re
import shlex
from pathlib import Path

import pytest

from anomaly_kernels.cli import _parser

from support.lightning_noise import DDP_NOISE

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(?:<!-- (?P<marker>[^>]*) -->\s*\n)?```(?P<language>\w+)\n(?P<code>.*?)```", re.S)
NOT_EXECUTED = re.compile(r"not executed: (?P<reason>\S.*)")

pytestmark = DDP_NOISE + [pytest.mark.filterwarnings("ignore:.*AUROC is undefined.*")]


def _blocks(language):
    return [
        (match.group("marker") or "", match.group("code"))
        for match in BLOCK.finditer(README.read_text())
        if match.group("language") == language
    ]


def test_snippets_not_executed_are_marked_with_a_reason():
    skipped = [NOT_EXECUTED.fullmatch(marker.strip()) for marker, _ in _blocks("python")]
    reasons = [match.group("reason") for match in skipped if match]
    assert reasons == ["needs a process group started by torchrun"]
    assert sum(match is None for match in skipped) >= 3  # the rest are executed


def test_python_snippets_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a snippet that needed the network would fail here
    namespace = {"__name__": "__main__"}
    executed = 0
    for marker, code in _blocks("python"):
        if NOT_EXECUTED.fullmatch(marker.strip()):
            continue
        exec(compile(code, f"{README.name} snippet {executed + 1}", "exec"), namespace)
        executed += 1
    # The DDP snippet trained on two processes and left a checkpoint predict can read.
    from anomaly_kernels.pipeline.checkpoint import load_model

    module, metadata = load_model(tmp_path / "padim.ckpt")
    assert metadata == {"model": "padim", "image_size": 64} and module.model.is_fitted


def test_commands_parse():
    commands = [
        shlex.split(line.split("#")[0])
        for _, code in _blocks("sh")
        for line in code.splitlines()
        if line.startswith("anomaly-kernels ")
    ]
    assert len(commands) >= 6
    parser = _parser()
    for command in commands:
        parser.parse_args(command[1:])  # argparse exits (failing the test) on an unknown flag
