"""The deployment example (``deploy/compose.yaml``, ``deploy/nginx.conf``) cannot run here: there
is no Docker. What it relies on is checked without it: every setting it gives is one the app
knows and accepts, the files it names exist, the image installs the app with the Redis extra
(non-editable), the proxy's rules fit the app's limits and session ids, and the health check it
runs passes against a real server. Two app processes sharing one Redis are tested in
``test_redis_store.py``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from app.main import create_app

from app.security import SESSION_ID
from app.sessions import new_session_id
from app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT_ROOT / "deploy"
APP_SERVICES = ("app1", "app2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def nginx() -> str:
    return (DEPLOY / "nginx.conf").read_text()


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}``."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: variables.get(m[1]) or m[2], value)


def app_settings(service: dict, **variables: str) -> Settings:
    environment = {key: interpolate(str(value), variables)
                   for key, value in service["environment"].items()}
    unknown = [key for key in environment if not key.startswith("CNNVIZ_")
               or key[len("CNNVIZ_"):].lower() not in Settings.model_fields]
    assert not unknown, f"settings the app does not know: {unknown}"
    return Settings(**{key[len("CNNVIZ_"):].lower(): value for key, value in environment.items()})


def test_compose_runs_redis_two_app_replicas_and_a_proxy(compose):
    services = compose["services"]
    assert set(services) == {"redis", *APP_SERVICES, "proxy"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync always" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    for name in APP_SERVICES:
        settings = app_settings(services[name])
        assert settings.session_store == "redis"
        assert re.fullmatch(r"redis://redis:6379/\d+", settings.redis_url)  # the service's name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "ports" not in services[name]  # reached through the proxy only
    assert services[APP_SERVICES[0]] == services[APP_SERVICES[1]]


def test_the_image_installs_the_app_with_the_redis_extra_non_editable(compose):
    build = compose["services"]["app1"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == PROJECT_ROOT
    dockerfile = (context / build["dockerfile"]).read_text()
    assert build["args"]["EXTRAS"] == "redis"
    assert "ARG EXTRAS" in dockerfile
    (install,) = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert " -e " not in install and '"/tmp/src${EXTRAS:+[$EXTRAS]}"' in install
    expanded = subprocess.run(["sh", "-c", 'echo "/tmp/src${EXTRAS:+[$EXTRAS]}"'],
                              env={"EXTRAS": "redis"}, capture_output=True, text=True)
    assert expanded.stdout.strip() == "/tmp/src[redis]"
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^redis = \["redis>=5"\]$', pyproject, re.MULTILINE)
    port = re.search(r'"--port", "(\d+)"', dockerfile).group(1)
    assert f"EXPOSE {port}" in dockerfile and '"--host", "0.0.0.0"' in dockerfile


def test_the_proxy_config_is_mounted_and_sends_to_both_replicas(compose, nginx):
    proxy = compose["services"]["proxy"]
    (mount,) = proxy["volumes"]
    source, target, _ = mount.split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "nginx.conf"
    assert target == "/etc/nginx/conf.d/default.conf"
    servers = re.findall(r"^\s*server (\S+):(\d+)", nginx, re.MULTILINE)
    assert sorted(host for host, _ in servers) == sorted(APP_SERVICES)
    assert {port for _, port in servers} == {"8000"}
    assert set(proxy["depends_on"]) == set(APP_SERVICES)


def test_the_proxy_limits_fit_the_apps(compose, nginx):
    settings = app_settings(compose["services"]["app1"])
    size, unit = re.search(r"client_max_body_size (\d+)([km]?);", nginx).groups()
    allowed = int(size) * {"": 1, "k": 1024, "m": 1024 ** 2}[unit]
    assert allowed > settings.max_body_bytes  # the app's own 413 is the one a user reads
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", nginx).group(1))
    assert read_timeout >= settings.computation_wait_seconds + 60
    assert "proxy_next_upstream error;" in nginx  # a step that timed out is never replayed


def test_the_proxys_affinity_rule_reads_session_ids_the_app_gives(nginx):
    pattern = re.search(r'"~(\^/api/sessions/.*?)" \$1;', nginx).group(1)
    session_id = new_session_id()
    assert SESSION_ID.fullmatch(session_id)
    for path in (f"/api/sessions/{session_id}", f"/api/sessions/{session_id}/step"):
        assert re.match(pattern, path).group(1) == session_id
    for path in ("/api/sessions", "/api/sessions/import", "/api/presets", "/"):
        assert re.match(pattern, path) is None


@pytest.mark.parametrize("public_host", [None, "viz.example.edu"])
def test_the_replicas_answer_to_the_name_the_proxy_passes_on(compose, nginx, public_host):
    assert "proxy_set_header Host $host;" in nginx
    variables = {"CNNVIZ_PUBLIC_HOST": public_host} if public_host else {}
    settings = app_settings(compose["services"]["app1"], **variables)
    with TestClient(create_app(settings.model_copy(update={"session_store": "memory"}))) as app:
        for name in ("localhost", public_host or "localhost", "127.0.0.1"):
            assert app.get("/api/health", headers={"host": name}).status_code == 200, name
        refused = app.get("/api/health", headers={"host": "rebound.example.net"})
        assert refused.status_code == 400


@pytest.mark.slow
def test_the_replicas_health_check_passes_against_a_real_server(compose, real_server, tmp_path):
    command = compose["services"]["app1"]["healthcheck"]["test"]
    assert command[:3] == ["CMD", "python", "-c"]
    server = real_server(tmp_path)
    check = command[3].replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    assert check != command[3]
    assert subprocess.run([sys.executable, "-c", check], timeout=30).returncode == 0
    server.stop()
    assert subprocess.run([sys.executable, "-c", check], timeout=30,
                          capture_output=True).returncode != 0
