"""Test-wide set-up: the app's session database (the default SQLite store) goes to temporary
folders, never to ./data. The app built at import time (``app.main:app``) gets one folder for
the run; every test gets a fresh one for apps it builds itself, so tests never see each other's
sessions nor fill the session cap."""

import atexit
import os
import shutil
import tempfile

import pytest

if "CNNVIZ_DATA_DIR" not in os.environ:
    _run_data_dir = tempfile.mkdtemp(prefix="cnnviz-test-data-")
    os.environ["CNNVIZ_DATA_DIR"] = _run_data_dir
    atexit.register(shutil.rmtree, _run_data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_session_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path_factory.mktemp("cnnviz-data")))
