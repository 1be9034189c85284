"""Shared by the hardening tests: bench/load.py as a module (its Server starts the real app
under uvicorn on a free 127.0.0.1 port) and a factory of such servers on a chosen data folder."""

import importlib.util
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def load_bench_module():
    spec = importlib.util.spec_from_file_location("cnnviz_bench_load", PROJECT_ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_load():
    return load_bench_module()


@pytest.fixture
def real_server(bench_load):
    """``real_server(data_dir, **env)`` starts the app; every server is stopped at the end."""
    started = []

    def start(data_dir, **env):
        server = bench_load.Server(Path(data_dir), {f"CNNVIZ_{k.upper()}": str(v) for k, v in env.items()})
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
