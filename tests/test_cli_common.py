"""Commands that behave alike: -h/--version everywhere, help text for every option, -q/-v, one
--device syntax, --json -, folder input that names what it skipped, OS errors as one line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from test_cli_eval import make_dataset, save_probe

from wsi_pipeline import __version__
from wsi_pipeline.cli import common
from wsi_pipeline.cli.evaluate import evaluate_command
from wsi_pipeline.cli.infer import cli as infer_cli
from wsi_pipeline.cli.main import cli as pipeline_cli
from wsi_pipeline.cli.progress import TileProgressBar
from wsi_pipeline.cli.slide_paths import expand_slide_paths
from wsi_pipeline.cli.train import train_command
from wsi_pipeline.errors import OptionError


def _commands() -> list[tuple[str, click.Command, list[str]]]:
    tops = [("wsi-infer", infer_cli, []), ("wsi-train", train_command, []),
            ("wsi-eval", evaluate_command, []), ("wsi-pipeline", pipeline_cli, [])]  # fmt: skip
    subs = [
        (f"wsi-pipeline {name}", command, [name]) for name, command in sorted(pipeline_cli.commands.items())
    ]
    return tops + subs


COMMANDS = _commands()


@pytest.mark.parametrize(("name", "command", "prefix"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_answers_help_and_version(name, command, prefix):
    root = pipeline_cli if prefix else command
    runner = CliRunner()
    for flag in ("-h", "--help"):
        result = runner.invoke(root, [*prefix, flag])
        assert result.exit_code == 0 and result.output.startswith(f"Usage: {name}"), result.output
        for option in ("-q, --quiet", "-v, --verbose", "--debug", "--version"):
            assert option in result.output
    result = runner.invoke(root, [*prefix, "--version"])
    assert result.exit_code == 0 and result.output.strip() == f"{name}, version {__version__}"


@pytest.mark.parametrize(("name", "command", "prefix"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_option_has_help_text(name, command, prefix):
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help text"


def test_shown_defaults(tmp_path):
    infer_help = CliRunner().invoke(infer_cli, ["-h"]).output
    assert "[default: results]" in infer_help and "[default: 256; x>=1]" in infer_help
    train_help = " ".join(CliRunner().invoke(train_command, ["-h"]).output.split())
    assert "[default: 10, or the --config file's]" in train_help  # --epochs: TrainConfig's default
    assert "[default: seed_cnn, or the --config file's]" in train_help


def test_device_syntax_is_the_same_everywhere():
    """One parser (devices.parse_device): a bad --device is an OptionError (run_cli: one line, exit 1)
    in every command, checked before anything runs."""
    for command in (infer_cli, evaluate_command, train_command):
        args = (
            ["x"]
            if command is infer_cli
            else ["--data", "x"] + (["-o", "y"] if command is train_command else [])
        )
        result = CliRunner().invoke(command, [*args, "--device", "gpu"])
        assert isinstance(result.exception, OptionError), (command.name, result.output)
        assert "--device: unknown device 'gpu' (use auto, cpu, cuda or cuda:N)" in str(result.exception)
    assert common.DeviceType().convert("CUDA:1", None, None) == "cuda:1"


def test_quiet_and_verbose_set_the_logging_level():
    seen = {}

    @click.command(context_settings=common.CONTEXT)
    @common.standard_options("probe")
    def probe() -> None:
        seen["level"], seen["quiet"] = common.log_level(), common.is_quiet()
        seen["disable"] = common.progress_disable()

    for args, level in (([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
                        (["-q"], logging.ERROR)):  # fmt: skip
        assert CliRunner().invoke(probe, args).exit_code == 0
        assert seen["level"] == level and seen["quiet"] == (args == ["-q"])
        assert logging.getLogger().level == level and logging.getLogger().handlers[0].level == level
    assert seen["disable"] is True  # -q: no progress bar
    assert CliRunner().invoke(probe, []).exit_code == 0 and seen["disable"] is None  # tqdm: a tty only


def test_progress_bar_only_on_a_terminal(capsys):
    bar = TileProgressBar("slide.svs", enabled=True)
    bar.update(1, 10)  # pytest's stderr is not a terminal
    assert bar.bar is not None and bar.bar.disable
    bar.close()
    assert "tile" not in capsys.readouterr().err


def _raising(exc: BaseException) -> click.Command:
    @click.command("boom", context_settings=common.CONTEXT)
    @common.standard_options("boom")
    def boom() -> None:
        raise exc

    return boom


def _run(monkeypatch, capsys, command: click.Command, args: list[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["boom", *args])
    with pytest.raises(SystemExit) as stop:
        common.run_cli(command)
    return int(stop.value.code), capsys.readouterr().err


def test_os_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.delenv(common.DEBUG_ENV, raising=False)
    full = _raising(OSError(28, "No space left on device", "/out/slide/heatmap.zarr"))
    code, err = _run(monkeypatch, capsys, full, [])
    assert code == 1 and err == "error: /out/slide/heatmap.zarr: No space left on device\n"
    denied = _raising(PermissionError(13, "Permission denied", "/out"))
    code, err = _run(monkeypatch, capsys, denied, ["--debug"])
    assert (
        code == 1
        and "Traceback (most recent call last)" in err
        and err.endswith("error: /out: Permission denied\n")
    )
    monkeypatch.setenv(common.DEBUG_ENV, "1")
    code, err = _run(monkeypatch, capsys, _raising(OptionError("--stride: bad")), [])
    assert code == 1 and "Traceback" in err and err.endswith("error: --stride: bad\n")
    monkeypatch.setenv(common.DEBUG_ENV, "0")
    assert _run(monkeypatch, capsys, full, [])[1].count("\n") == 1


def test_folder_input_names_what_it_skipped_and_recursive_descends(tmp_path):
    (tmp_path / "a.svs").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".DS_Store").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.tif").write_text("")
    (tmp_path / "m.mrxs").write_text("")
    (tmp_path / "m").mkdir()  # the MRXS data folder: part of m.mrxs
    (tmp_path / "m" / "Slidedat.ini").write_text("")
    notes: list[str] = []
    assert [p.name for p in expand_slide_paths([tmp_path], note=notes.append)] == ["a.svs", "m.mrxs"]
    (note,) = notes
    assert note.startswith(f"note: {tmp_path}: skipped 1 subfolder (sub; --recursive descends)")
    assert "1 file that is not a slide by extension (notes.txt)" in note and "DS_Store" not in note
    notes.clear()
    found = expand_slide_paths([tmp_path], recursive=True, note=notes.append)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.svs", "m.mrxs", "sub/b.tif"]
    assert notes == [f"note: {tmp_path}: skipped 1 file that is not a slide by extension (notes.txt)"]
    empty = tmp_path / "sub2"
    (empty / "deeper").mkdir(parents=True)
    with pytest.raises(OptionError, match=r"no slide files .*skipped 1 subfolder \(deeper"):
        expand_slide_paths([empty])


def test_eval_json_dash_writes_json_to_stdout(tmp_path: Path, monkeypatch, capsys):
    make_dataset(tmp_path / "data", n=12)
    model = save_probe(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["wsi-eval", "--data", str(tmp_path / "data"), "--model", str(model),
                                      "--json", "-", "--bootstrap", "10"])  # fmt: skip
    from wsi_pipeline.cli.evaluate import main

    main()
    out = capsys.readouterr()
    assert json.loads(out.out)["n"] == 12  # stdout is the JSON only
    assert "patches" in out.err and not (tmp_path / "-").exists()
