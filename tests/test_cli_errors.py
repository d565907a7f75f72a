"""The command line's failure modes: one line on stderr and exit code 2 for usage errors, 130 for
Ctrl-C (and SIGTERM during `backprop train`), quiet for a closed stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from backprop.cli import main

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "BACKPROP_BACKEND": "numpy"}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err and "usage:" not in err


@pytest.mark.parametrize(
    "argv, prefix, message",
    [
        (["train", "--epochs", "1.5"], "backprop train", "argument --epochs: invalid int value: '1.5'"),
        (["train", "--lr", "abc"], "backprop train", "argument --lr: invalid float value: 'abc'"),
        (["train", "--lr"], "backprop train", "argument --lr: expected one argument"),
        (["check", "--cases", "x"], "backprop check", "argument --cases: invalid int value: 'x'"),
        (["diagram"], "backprop diagram", "the following arguments are required: --out"),
        (["frobnicate"], "backprop", "argument COMMAND: invalid choice: 'frobnicate'"),
        (["--verbose"], "backprop", "unrecognized arguments: --verbose"),
        # a misspelt option of a command names the option and the command, with the nearest option
        (["train", "--epoch", "3"], "backprop train", "unrecognized arguments: --epoch 3 (did you mean --epochs?)"),
        (["train", "--epochz", "3"], "backprop train", "unrecognized arguments: --epochz 3"),
        (["train", "extra"], "backprop train", "unrecognized arguments: extra"),
        (["info", "--jsn"], "backprop info", "unrecognized arguments: --jsn (did you mean --json?)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, prefix, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert one_line(err), err
    assert err.startswith(f"{prefix}: error: ") and message in err


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["--version"]])
def test_help_and_version_exit_0_on_stdout(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and err == "" and out.strip()


@pytest.mark.parametrize("hidden", ["128,,64", "128,", ",128", "", " , "])
def test_hidden_refuses_empty_parts(capsys, hidden):
    code, _, err = run_cli(capsys, "train", "--no-progress", "--hidden", hidden)
    assert code == 2 and one_line(err) and "--hidden must be positive integers" in err


def test_positive_ints_takes_spaces_around_numbers():
    from backprop.cli import CommandError, positive_ints

    assert positive_ints(" 128 , 64 ", "--hidden", "128,64") == [128, 64]
    with pytest.raises(CommandError, match="got '1,,2'"):
        positive_ints("1,,2", "--hidden", "128,64")


def test_a_network_too_large_is_refused_without_allocating(capsys, monkeypatch):
    from backprop.training import trainer

    def allocate(*args, **kwargs):
        raise AssertionError("the network was built")

    monkeypatch.setattr(trainer.Trainer, "__init__", allocate)
    code, _, err = run_cli(capsys, "train", "--no-progress", "--hidden", "100000000")
    assert code == 2 and one_line(err)
    assert err.startswith("backprop train: error: ") and "7,500,000,010 parameters" in err


def test_memory_error_is_one_line_and_exit_2(capsys, monkeypatch):
    from backprop.cli import info

    def report():
        raise MemoryError("Unable to allocate 47.7 GiB for an array with shape (64, 100000000)")

    monkeypatch.setattr(info, "report", report)
    code, _, err = run_cli(capsys, "info")
    assert code == 2 and one_line(err)
    assert err.startswith("backprop info: error: not enough memory") and "47.7 GiB" in err


def test_memory_error_building_the_network_names_it(capsys, monkeypatch):
    from backprop.training import trainer

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(trainer.Trainer, "__init__", no_memory)
    code, _, err = run_cli(capsys, "train", "--no-progress", "--hidden", "32")
    assert code == 2 and one_line(err)
    assert "backprop train: error: not enough memory for the network [64, 32, 10]" in err


def test_ctrl_c_while_building_the_parser_is_one_line_and_exit_130(capsys, monkeypatch):
    """Ctrl-C during start-up (the command modules' imports run while the parser is built)."""
    from backprop.cli import train

    def interrupted(parser):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "add_arguments", interrupted)
    code, out, err = run_cli(capsys, "train", "--epochs", "3")
    assert code == 130 and out == "" and err == "backprop train: interrupted\n"


def test_ctrl_c_during_a_commands_imports_is_one_line_and_exit_130(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def interrupting_import(name, *args, **kwargs):
        if name == "gradcheck" or name.endswith(".gradcheck"):
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupting_import)
    code, _, err = run_cli(capsys, "check", "--cases", "1")
    assert code == 130 and err == "backprop check: interrupted\n"


@pytest.mark.parametrize("argv", [["info", "--json"], ["info"], ["--help"]])
def test_a_closed_stdout_ends_quietly(argv):
    """`backprop info --json | head -1`: the reader is gone before (or while) the output is written."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "backprop", *argv], stdout=write, stderr=subprocess.PIPE, env=ENV, timeout=120
        )
    finally:
        os.close(write)
    assert result.returncode in (0, 141), result.stderr
    assert result.stderr == b""


# `backprop train` in a child whose SIGINT is Python's default handler (Ctrl-C raises KeyboardInterrupt)
# or ignored (as in a shell's background job), set in the child itself: no preexec_fn in a process with JAX
CHILD = "import signal, sys; signal.signal(signal.SIGINT, signal.{}); from backprop.cli import main; sys.exit(main())"


@pytest.mark.parametrize("sigint", ["default_int_handler", "SIG_IGN"])
def test_sigterm_stops_training_like_ctrl_c(tmp_path, sigint):
    from backprop.training.trainer import Trainer

    out_dir = tmp_path / "run"
    argv = ["train", "--epochs", "100000", "--no-progress", "--out", str(out_dir)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(sigint), *argv],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out_dir / "checkpoint.safetensors").exists():
            assert child.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert err.endswith("backprop train: interrupted\n") and "Traceback" not in err
    assert Trainer.load(out_dir / "checkpoint.safetensors").epoch >= 1
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".tmp-")]


def test_train_restores_the_sigterm_handler(capsys):
    before = signal.getsignal(signal.SIGTERM)
    code, _, _ = run_cli(capsys, "train", "--no-progress", "--epochs", "1", "--hidden", "8")
    assert code == 0 and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--num-processes", "2", "--process-id", "2"],
            "--process-id must be between 0 and 1 (--num-processes 2), got 2",
        ),
        (
            ["--num-processes", "2", "--process-id", "-1"],
            "--process-id must be between 0 and 1 (--num-processes 2), got -1",
        ),
        (["--process-id", "1"], "--process-id must be between 0 and 0 (--num-processes 1), got 1"),
        (["--num-processes", "0"], "--num-processes must be >= 1, got 0"),
        (["--cpu-devices", "0"], "--cpu-devices must be >= 1, got 0"),
        (["--timeout", "0"], "--timeout must be >= 1 (seconds), got 0"),
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    ],
)
def test_distributed_demo_validates_its_options(capsys, argv, message):
    from backprop.cli import distributed

    with pytest.raises(SystemExit) as exit_:
        distributed.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(err)
    assert err.startswith("python -m backprop.cli.distributed: error: ") and message in err


def test_distributed_demo_reports_a_failed_initialize_in_one_line(capsys, monkeypatch):
    from backprop.cli import distributed

    def refuse(*args, **kwargs):
        raise RuntimeError("coordinator unreachable")

    monkeypatch.setattr(distributed, "initialize", refuse)
    code = distributed.main(["--num-processes", "2", "--process-id", "1", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 2 and one_line(err)
    assert err == "python -m backprop.cli.distributed: error: cannot join the run: coordinator unreachable\n"
