"""Bad model configs are one-line :class:`ModelConfigError`s naming the config file, when it is read.

Each case is a real model folder (weights saved with ``save_model``) whose ``config.json`` is then
edited the way a user might: it must fail in ``load_model`` and, as one ``error:`` line with exit
code 1, in ``wsi-infer``, ``wsi-eval`` and ``wsi-pipeline export``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_wsi_pipeline
from test_cli_eval import make_dataset

from wsi_pipeline.cli import evaluate as cli_eval
from wsi_pipeline.cli import infer as cli_infer
from wsi_pipeline.errors import ModelConfigError, ModelError
from wsi_pipeline.models import ModelConfig, create_model, load_model, save_model
from wsi_pipeline.models.config import CONFIG_FILENAME
from wsi_pipeline.models.registry import check_model_kwargs
from wsi_pipeline.testing import write_pyramidal_tiff

TINY = {"widths": [4, 8, 8], "dropout": 0.0}


def _tiny_folder(folder: Path, **config: object) -> Path:
    torch.manual_seed(0)
    module = create_model("tiny_resnet", **TINY)
    return save_model(folder, module, ModelConfig("tiny_resnet", dict(TINY), name="tiny", **config))  # type: ignore[arg-type]


def _edit(folder: Path, **changes: object) -> Path:
    path = folder / CONFIG_FILENAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def _ensemble_folder(folder: Path) -> Path:
    members = [create_model("tiny_resnet", **TINY), create_model("tiny_resnet", **TINY)]
    from wsi_pipeline.models.ensemble import MeanLogitEnsemble

    member_kwargs = [{"architecture": "tiny_resnet", "arch_kwargs": dict(TINY)}] * 2
    cfg = ModelConfig("ensemble", {"members": member_kwargs}, name="ens")
    return save_model(folder, MeanLogitEnsemble(members), cfg)


BAD_CONFIGS = {
    "unknown arch keyword": ({"arch_kwargs": {**TINY, "widthz": [4]}}, r"unknown keyword.*'widthz'"),
    "arch keyword of the wrong type": (
        {"arch_kwargs": {**TINY, "dropout": "high"}}, r"'dropout'.*float.*'high'"
    ),
    "arch sequence of the wrong type": ({"arch_kwargs": {**TINY, "widths": 8}}, r"'widths'"),
    "patch_size not a number": ({"patch_size": "abc"}, r"patch_size must be a whole number.*'abc'"),
    "patch_size a bool": ({"patch_size": True}, r"patch_size must be a whole number"),
    "negative center_crop": ({"center_crop": -5}, r"center_crop must be .*-5"),
    "center_crop larger than the patch": (
        {"center_crop": 128}, r"center_crop 128 .*larger than .*patch_size 96"
    ),
    "mpp not a number": ({"mpp": "fine"}, r"mpp must be a positive number"),
    "mean not numbers": ({"mean": ["a", 0, 0]}, r"mean"),
}  # fmt: skip


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return _tiny_folder(tmp_path_factory.mktemp("m") / "good")


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_a_model_config_error_naming_the_file(case: str, tmp_path: Path) -> None:
    changes, pattern = BAD_CONFIGS[case]
    config_path = _edit(_tiny_folder(tmp_path / "m"), **changes)
    with pytest.raises(ModelConfigError, match=pattern) as info:
        load_model(config_path.parent)
    message = str(info.value)
    assert message.startswith(f"{config_path}: ") and "\n" not in message
    with pytest.raises(ModelConfigError, match=pattern):  # read time: the config alone is refused
        ModelConfig.load(config_path)


def test_ensemble_member_that_does_not_build(tmp_path: Path) -> None:
    folder = _ensemble_folder(tmp_path / "ens")
    assert load_model(folder).config.architecture == "ensemble"
    members = [
        {"architecture": "tiny_resnet", "arch_kwargs": dict(TINY)},
        {"architecture": "tiny_resnet", "arch_kwargs": {**TINY, "pool": 3}},
    ]
    config_path = _edit(folder, arch_kwargs={"members": members})
    with pytest.raises(ModelConfigError, match=r"ensemble member 2 \(tiny_resnet\).*'pool'") as info:
        load_model(folder)
    assert str(info.value).startswith(f"{config_path}: ")
    _edit(folder, arch_kwargs={"members": [{"arch_kwargs": {}}]})
    with pytest.raises(ModelConfigError, match=r"ensemble member 1.*'architecture'"):
        load_model(folder)
    _edit(folder, arch_kwargs={"members": [{"architecture": "no_such_net"}]})
    with pytest.raises(ModelError, match=r"ensemble member 1.*unknown architecture 'no_such_net'"):
        load_model(folder)


def test_builder_value_error_is_a_config_error(tmp_path: Path) -> None:
    """A value the signature accepts but the builder rejects (an unknown pooling name)."""
    config_path = _edit(_tiny_folder(tmp_path / "m"), arch_kwargs={**TINY, "pool": "median"})
    with pytest.raises(ModelConfigError, match=r"does not build.*median") as info:
        load_model(config_path.parent)
    assert str(info.value).startswith(f"{config_path}: ")


def test_model_that_does_not_run_on_its_input_size(tmp_path: Path) -> None:
    """seed_cnn with a 4 px centre crop: builds, loads its weights, but its three 2x2 poolings cannot
    shrink 4 px (before: a RuntimeError at inference, after the slide was read)."""
    module = create_model("seed_cnn", dense=8)
    folder = save_model(tmp_path / "m", module, ModelConfig("seed_cnn", {"dense": 8}, center_crop=4))
    with pytest.raises(ModelConfigError, match=r"does not run on 4x4 px input") as info:
        load_model(folder)
    assert str(info.value).startswith(f"{folder / CONFIG_FILENAME}: ")


def test_check_model_kwargs_against_the_signature() -> None:
    check_model_kwargs("tiny_resnet", {"widths": (4, 8), "blocks": None, "dropout": 1})  # int for float
    check_model_kwargs("seed_cnn", {"input_size": 32})
    with pytest.raises(ModelConfigError, match=r"'input_size' must be int, got float 32\.5"):
        check_model_kwargs("seed_cnn", {"input_size": 32.5})
    with pytest.raises(ModelConfigError, match=r"'widths' must be .*int.*got list \[4, 'x'\]"):
        check_model_kwargs("tiny_resnet", {"widths": [4, "x"]})
    with pytest.raises(ModelConfigError, match=r"accepted: .*dropout"):
        check_model_kwargs("seed_cnn", {"drop": 0.1})


def test_wrong_shape_weights_message_shows_the_mismatch(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path / "m")
    _edit(folder, arch_kwargs={**TINY, "widths": [4, 8, 16]})
    with pytest.raises(ModelError, match=r"size mismatch for .*torch\.Size\(\[16, 8, 3, 3\]\)") as info:
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message and "checkpoint" in message and "current model" in message


def _main(module, monkeypatch, capsys, prog: str, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [prog, *args])
    code = 0
    try:
        module.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["unknown arch keyword", "patch_size not a number", "negative center_crop"])
def test_commands_report_a_bad_config_in_one_line(case: str, tmp_path: Path, monkeypatch, capsys) -> None:
    changes, pattern = BAD_CONFIGS[case]
    config_path = _edit(_tiny_folder(tmp_path / "m"), **changes)
    model = str(config_path.parent)
    slide = write_pyramidal_tiff(tmp_path / "s.tif", np.full((200, 200, 3), 120, np.uint8), mpp=1.0)
    make_dataset(tmp_path / "data", n=6)
    runs = {
        "wsi-infer": lambda: _main(cli_infer, monkeypatch, capsys, "wsi-infer", str(slide), "-o",
                                   str(tmp_path / "out"), "--model", model, "--device", "cpu"),
        "wsi-eval": lambda: _main(cli_eval, monkeypatch, capsys, "wsi-eval", "--data", str(tmp_path / "data"),
                                  "--model", model, "--device", "cpu"),
        "export": lambda: (run_wsi_pipeline(monkeypatch, ["export", "--model", model, "-o",
                                                          str(tmp_path / "exp")]), capsys.readouterr().err),
    }  # fmt: skip
    for name, run in runs.items():
        code, err = run()
        lines = err.strip().splitlines()
        assert code == 1, (name, err)
        assert len(lines) == 1 and lines[0].startswith(f"error: {config_path}: "), (name, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out" / "s").exists() and not (tmp_path / "exp").exists()
