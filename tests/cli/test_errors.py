"""The CLI catches the library's errors once (``MmixError``): one line naming the type, exit status 2;
``--debug`` lets the traceback through."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mmix_applied.cli import main
from mmix_applied.data.charset import Charset, UnknownCharacterError
from mmix_applied.engine.checkpoints import CheckpointError
from mmix_applied.engine.module import NonFiniteLossError
from mmix_applied.engine.rundir import RunWriteError
from mmix_applied.errors import ConfigKeyError, MmixError
from tests.helpers import ROOT

CONFIG = str(ROOT / "configs" / "classification.yaml")
#: The module (``mmix_applied.cli.main`` as an attribute is the function the package re-exports).
cli = importlib.import_module("mmix_applied.cli.main")
HINT = "(run with --debug for the traceback)"


class _OwnError(MmixError, ArithmeticError):
    """An error a user's extension could add: no built-in except clause of the CLI names its type."""


@pytest.mark.parametrize("error", [
    CheckpointError("checkpoint x.ckpt is truncated; use another checkpoint"),
    RunWriteError("could not write runs/r/metrics.json (disk full); free space", path=Path("runs/r/metrics.json")),
    NonFiniteLossError("training loss is nan at global step 0; try a lower learning rate"),
    ConfigKeyError("unknown config key 'train.max_epoch'; did you mean 'max_epochs'?"),
    _OwnError("a message of an error the CLI has never heard of"),
], ids=lambda e: type(e).__name__)
def test_a_library_error_is_one_line_with_its_type_and_exit_2(monkeypatch, capsys, error):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_run", fail)
    assert main(["fit", "-c", CONFIG]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {type(error).__name__}: {error.args[0]} {HINT}\n"


def test_with_debug_the_error_propagates(monkeypatch):
    def fail(args):
        raise CheckpointError("checkpoint x.ckpt is truncated")

    monkeypatch.setattr(cli, "_run", fail)
    with pytest.raises(CheckpointError, match="x.ckpt is truncated"):
        main(["--debug", "fit", "-c", CONFIG])


def test_a_library_error_inside_a_wrapper_is_found(monkeypatch, capsys):
    """MONAI's ``applying transform`` RuntimeError hides the reader's error in its ``__cause__``."""
    inner = UnknownCharacterError({"é": [("lines.txt:3", 4)]}, charset=Charset("abc"))

    def fail(args):
        raise RuntimeError("applying transform <LoadLines>") from inner

    monkeypatch.setattr(cli, "_run", fail)
    assert main(["fit", "-c", CONFIG]) == 2
    err = capsys.readouterr().err
    assert err == f"error: UnknownCharacterError: {inner} {HINT}\n"
    assert "lines.txt:3@4" in err


def test_other_errors_are_not_swallowed(monkeypatch):
    """A bug (not a user or library error) keeps its traceback."""
    def fail(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_run", fail)
    with pytest.raises(ZeroDivisionError):
        main(["fit", "-c", CONFIG])


def test_a_real_config_error_prints_its_type(capsys):
    assert main(["fit", "-c", CONFIG, "train.max_epoch=3"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ConfigKeyError: unknown config key 'train.max_epoch'") and line.endswith(HINT)
