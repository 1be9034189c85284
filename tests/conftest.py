"""Test-wide set-up: one BLAS thread, and the app's session database (the default SQLite store)
in temporary folders, never in ./data. The app built at import time (``app.main:app``) gets one
folder for the run; every test gets a fresh one for apps it builds itself, so tests never see each
other's sessions nor fill the session cap."""

import atexit
import os
import shutil
import tempfile

import pytest
from threadpoolctl import threadpool_limits

if "CNNVIZ_DATA_DIR" not in os.environ:
    _run_data_dir = tempfile.mkdtemp(prefix="cnnviz-test-data-")
    os.environ["CNNVIZ_DATA_DIR"] = _run_data_dir
    atexit.register(shutil.rmtree, _run_data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_session_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path_factory.mktemp("cnnviz-data")))


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """The server runs with one BLAS thread per request thread (app/__init__.py); so does every
    test, whatever imported NumPy first. Results computed in the test process then match the
    server's to the bit (a multi-threaded BLAS sums in another order), and on the shared 2-core
    machine OpenBLAS's spinning workers no longer make training tests crawl (30 s instead of 1.3)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
