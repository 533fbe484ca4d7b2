"""``wsi-train``: train a patch classifier on a labelled patch dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_pipeline.cli.common import architecture_option, device_option, run_cli
from wsi_pipeline.errors import OptionError


@click.command("train")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Patch dataset: Kaggle folder (train/ + train_labels.csv), PCam HDF5 or class folders.",
)
@architecture_option()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
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
@click.option("--epochs", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Initial learning rate.")
@click.option("--batch-size", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--val-fraction", type=float, default=None)
@click.option(
    "--augment/--no-augment", default=None, help="Dihedral flips/rotations (plus the config's jitter)."
)
@click.option("--stain-normalization", type=click.Choice(["none", "macenko", "reinhard"]), default=None)
@click.option("--remove-outliers/--keep-outliers", default=None, help="Drop blank/blurred/odd patches first.")
@click.option("--center-crop", type=int, default=None, help="Network sees the centre N px (the study: 32).")
@click.option("--max-patches", type=int, default=None, help="Train on a stratified sample of N patches.")
@device_option(default=None)
@click.option("--threads", "num_threads", type=int, default=None, help="Torch CPU threads.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default=None,
    help="auto: bf16 where the device has it natively and it measures faster, else fp32.",
)
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the network.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
def train_command(
    data_path: Path,
    model: str | None,
    config_path: Path | None,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Train a tumour/normal patch classifier; defaults reproduce the origin study."""
    from wsi_pipeline.training.config import TrainConfig
    from wsi_pipeline.training.run_folder import CONFIG_YAML
    from wsi_pipeline.training.trainer import train

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


def main() -> None:
    run_cli(train_command)


if __name__ == "__main__":
    main()
