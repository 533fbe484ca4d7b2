"""``wsi-train``: train a patch classifier on a labelled patch dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_pipeline.cli.common import CONTEXT, DeviceType, is_quiet, run_cli, standard_options
from wsi_pipeline.devices import DEVICE_CHOICES
from wsi_pipeline.errors import OptionError


class ConfigOption(click.Option):
    """An option overriding a :class:`~wsi_pipeline.training.config.TrainConfig` field; its help
    shows that field's default (looked up only when help is shown: the import costs ~1 s)."""

    def __init__(self, *args: Any, field: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("default", None)
        kwargs["show_default"] = False
        super().__init__(*args, **kwargs)
        self.config_field = field or (self.name or "")

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        return record[
            0
        ], f"{record[1]}  [default: {config_default(self.config_field)}, or the --config file's]"


def config_default(name: str) -> str:
    """The default of ``TrainConfig.<name>`` (``augment``: its dihedral flips) as help text."""
    import dataclasses

    from wsi_pipeline.training.augment import AugmentSettings
    from wsi_pipeline.training.config import TrainConfig

    if name == "augment":
        return "on" if AugmentSettings().dihedral else "off"
    value = {f.name: f for f in dataclasses.fields(TrainConfig)}[name].default
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


@click.command("wsi-train", context_settings=CONTEXT)
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Patch dataset: Kaggle folder (train/ + train_labels.csv), PCam HDF5 or class folders.",
)
@click.option(
    "--model",
    "model",
    cls=ConfigOption,
    help="Architecture name (see `wsi-pipeline models`).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    show_default=False,
    help="YAML file of training settings (configs/seed.yaml = the study, configs/default.yaml).",
)
@click.option(
    "-o",
    "--output",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder for checkpoints, logs, plots and the trained model.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --output after its last completed epoch.")
@click.option("--overwrite", is_flag=True, help="Delete the run in --output and start again.")
@click.option(
    "--epochs", cls=ConfigOption, type=int, help="Most epochs to train (early stopping may end sooner)."
)
@click.option("--lr", cls=ConfigOption, type=float, help="Initial learning rate.")
@click.option("--batch-size", cls=ConfigOption, type=int, help="Patches per training step.")
@click.option("--seed", cls=ConfigOption, type=int, help="Seed of initialisation, shuffling and the split.")
@click.option(
    "--val-fraction", cls=ConfigOption, type=float, help="Fraction of patches held out for validation."
)
@click.option(
    "--augment/--no-augment",
    cls=ConfigOption,
    help="Dihedral flips/rotations (plus the config's colour jitter); --no-augment turns all off.",
)
@click.option(
    "--stain-normalization",
    cls=ConfigOption,
    type=click.Choice(["none", "macenko", "reinhard"]),
    help="Stain normalisation fitted on the training set and applied again at inference.",
)
@click.option(
    "--remove-outliers/--keep-outliers",
    cls=ConfigOption,
    help="Drop blank/blurred/odd patches before training.",
)
@click.option(
    "--center-crop", cls=ConfigOption, type=int, help="Network sees the centre N px (the study: 32)."
)
@click.option("--max-patches", cls=ConfigOption, type=int, help="Train on a stratified sample of N patches.")
@click.option(
    "--device",
    cls=ConfigOption,
    type=DeviceType(),
    help=f"{DEVICE_CHOICES}; auto: the first CUDA device when there is one, else the CPU.",
)
@click.option(
    "--threads", "num_threads", cls=ConfigOption, type=int, help="Torch CPU threads (none: torch's)."
)
@click.option(
    "--precision",
    cls=ConfigOption,
    type=click.Choice(["auto", "fp32", "bf16"]),
    help="auto: bf16 where the device has it natively and it measures faster, else fp32.",
)
@click.option(
    "--compile/--no-compile",
    "compile",
    cls=ConfigOption,
    help="torch.compile the network (needs a C++ compiler on CPU; minutes of start-up).",
)
@click.option(
    "--distill-from",
    cls=ConfigOption,
    type=click.Path(path_type=str),
    help="Teacher model folder: train on labels blended with its probabilities (knowledge distillation).",
)
@click.option("--distill-weight", cls=ConfigOption, type=float, help="Teacher's share of the targets, 0-1.")
def train_command(
    data_path: Path,
    model: str | None,
    config_path: Path | None,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    **options: Any,
) -> None:
    """Train a tumour/normal patch classifier; defaults reproduce the origin study."""
    from wsi_pipeline.training.config import TrainConfig
    from wsi_pipeline.training.run_folder import CONFIG_YAML
    from wsi_pipeline.training.trainer import train

    quiet = is_quiet()  # -q: no progress bar or per-epoch lines
    overrides: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if model is not None:
        overrides["model"] = model
    if overrides.get("stain_normalization") == "none":
        overrides["stain_normalization"] = None
    if "augment" in overrides:
        overrides["augment"] = _augment_override(config_path, overrides["augment"])
    if config_path is None and resume and (run_dir / CONFIG_YAML).is_file():
        config_path = run_dir / CONFIG_YAML
    if config_path is not None:
        config = TrainConfig.from_yaml(config_path, overrides)
    else:
        config = TrainConfig.from_dict(overrides, source="options")
    echo = None if quiet else (lambda text: click.echo(text, err=True))
    result = train(
        data_path, config, run_dir, resume=resume, overwrite=overwrite, progress=not quiet, echo=echo
    )
    m = result.metrics
    click.echo(
        f"model: {result.model_dir}  epochs: {result.epochs_run}"
        f"{' (stopped early)' if result.stopped_early else ''}  val accuracy: {m['accuracy']:.4f}  "
        f"val AUC: {m['auc']:.4f}"
    )


def _augment_override(config_path: Path | None, enabled: bool) -> Any:
    """``--no-augment`` turns everything off; ``--augment`` keeps the config's jitter, adds flips."""
    if not enabled:
        return {"dihedral": False, "hsv": False, "hed": False}
    if config_path is None:
        return {"dihedral": True}
    import yaml

    try:
        data = yaml.safe_load(Path(config_path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise OptionError(f"{config_path}: cannot read: {exc}") from exc
    aug = data.get("augment") if isinstance(data, dict) else None
    return {**(aug if isinstance(aug, dict) else {}), "dihedral": True}


train_command = standard_options("wsi-train")(train_command)


def main() -> None:
    run_cli(train_command)


if __name__ == "__main__":
    main()
