"""Run the ``wsi-pipeline`` console entry point in-process and return its exit code."""

from __future__ import annotations

import sys

import pytest


def run_wsi_pipeline(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    from wsi_pipeline.cli.main import main

    monkeypatch.setattr(sys, "argv", ["wsi-pipeline", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
