"""A real install serves the page: the wheel built from this repository (and, as the README's
first command does, an editable install) goes into a fresh virtual environment, and ``cnnviz``
started from an unrelated folder serves ``/``, the page's scripts and Plotly's bundle.

The environment sees the system's packages (``--system-site-packages``) so NumPy, FastAPI and the
rest need no download; this package itself must come from the new install, which the test checks
through ``app.__file__``. The sources are copied first: building in place would leave ``build/``
and ``*.egg-info`` in the repository, and the copy is also what an install from a checkout sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from serving import PROJECT_ROOT, free_port  # noqa: E402

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "engine", "app", "static")
PAGE_FILES = {"/": "index.html", "/static/js/main.js": "js/main.js",
              "/static/js/views/strip.js": "js/views/strip.js",  # the modules' folders ship too
              "/static/css/style.css": "css/style.css"}


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH: the package must be imported from the environment, not this checkout."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, **extra}


def _copy_sources(destination: Path) -> Path:
    destination.mkdir()
    for name in SOURCES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination / name)
    return destination


def _install(kind: str, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh environment with the package installed as ``kind``; returns its bin folder and
    the sources it was installed from."""
    sources = _copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    # --without-pip: the environment's own pip and setuptools would be the older copies bundled
    # with Python; the system's (which build this project) are visible through the system site.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # --force-reinstall: the system already has this distribution (the developer's editable
    # install); the environment must get its own copy. Dependencies come from the system.
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--force-reinstall"]
    if kind == "wheel":
        wheels = tmp_path / "dist"
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
              "--no-build-isolation", "--wheel-dir", str(wheels), str(sources)],
             env=_clean_env())
        (wheel,) = wheels.glob("cnn_backprop_viz-*.whl")
        _run(pip + [str(wheel)], env=_clean_env())
    else:
        _run(pip + ["-e", str(sources)], env=_clean_env(), cwd=sources)
    return venv / "bin", sources


def _serve(bin_dir: Path, workdir: Path, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [str(bin_dir / "cnnviz"), "--port", str(port), "--log-level", "warning"],
        cwd=workdir, env=_clean_env(CNNVIZ_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode(errors="replace"))
        try:
            if httpx.get(f"{base}/api/health", timeout=5).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the installed server did not answer within 90 s")
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_installed_cnnviz_serves_the_page_from_another_folder(kind, tmp_path):
    bin_dir, sources = _install(kind, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    imported = _run([str(bin_dir / "python"), "-c",
                     "import app, app.settings as s; print(app.__file__); "
                     "print(s.Settings().static_dir)"], cwd=elsewhere, env=_clean_env())
    app_file, static_dir = (Path(line) for line in imported.stdout.split())
    if kind == "wheel":
        # the package and its page come from the environment, not from any checkout
        assert app_file.is_relative_to(tmp_path / "venv"), app_file
        assert static_dir == app_file.parent / "static"
        # `pip install .[redis]` (the deployment image) pulls in redis-py
        requires = _run([str(bin_dir / "python"), "-c", "import importlib.metadata as m; "
                         "print(*m.requires('cnn-backprop-viz'), sep='\\n')"],
                        cwd=elsewhere, env=_clean_env()).stdout.splitlines()
        assert 'redis>=5; extra == "redis"' in requires
    else:
        assert app_file == sources / "app" / "__init__.py"
        assert static_dir == sources / "static"

    process, base = _serve(bin_dir, elsewhere, tmp_path / "data")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            for path, name in PAGE_FILES.items():
                answer = client.get(path)
                assert answer.status_code == 200, (path, answer.text[:300])
                assert answer.content == (PROJECT_ROOT / "static" / name).read_bytes(), path
            assert "text/html" in client.get("/").headers["content-type"]
            plotly = client.get("/vendor/plotly.min.js")
            assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
            assert "javascript" in plotly.headers["content-type"]
            assert client.get("/static/js/no-such-module.js").status_code == 404
            created = client.post("/api/sessions", json={"preset": "tiny"})
            assert created.status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert not (elsewhere / "static").exists()
