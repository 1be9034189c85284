"""The page's "Export to PyTorch" link downloads the zip of ``…/export?format=pytorch``; run as
a learner would, its ``model.py`` prints the loss the page is showing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.browser


def test_export_to_pytorch_link_downloads_a_model_that_reproduces_the_shown_trace(open_page,
                                                                                 tmp_path):
    page, problems = open_page()
    page.wait_for_function("() => window.cnnviz.app.record && !window.cnnviz.app.actionRunning")
    shown = page.evaluate("() => ({loss: window.cnnviz.app.record.trace.loss, "
                          "step: window.cnnviz.app.record.step})")
    assert shown["step"] is None  # a trace of the current weights, not a step's "before"
    with page.expect_download() as download:
        page.get_by_text("Export to PyTorch").click()
    assert download.value.suggested_filename.endswith("-step0-pytorch.zip")
    archive = tmp_path / "export.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(tmp_path / "model")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-I", "model.py"], cwd=tmp_path / "model", env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["loss"] == pytest.approx(shown["loss"], rel=1e-5)
    assert problems.messages == []
