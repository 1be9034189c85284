"""Schemathesis against the app's own OpenAPI document, through the ASGI app (no network).

Every operation is fuzzed with generated requests, valid and invalid, and each answer is checked
against the document: never a 500, only documented status codes and content types, bodies that
fit the documented schemas, invalid requests refused, unsupported methods answered 405 with a
correct Allow header. Operations on a session run twice: with generated ids (which must never
reach a store: 404) and with a live session's id swapped in, so the generated bodies reach the
engine.

One schemathesis check is left out: "positive data acceptance" (a schema-valid request must be
accepted). Several rules cannot be written in JSON Schema and are enforced by the app with a
422 naming the problem: a spec must describe a valid network, pixels need a 'label',
momentum/beta hyperparameters must match the optimizer, an upload must hold a picture.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from app.main import create_app
from app.security import SESSION_ID
from app.settings import Settings

DATA_DIR = Path(tempfile.mkdtemp(prefix="cnnviz-fuzz-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
app = create_app(Settings(data_dir=DATA_DIR, session_store="sqlite"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
# Unknown query parameters are ignored, as HTTP APIs commonly do; they are not a violation.
schema.config.generation.update(allow_extra_parameters=True)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
CASES = {"generated": 0, "live session": 0, "live test, malformed id kept": 0}


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module", autouse=True)
def report_case_count():
    yield
    print(f"\nfuzzed cases: {CASES}")


@schema.parametrize()
@FUZZ
def test_every_operation_answers_as_documented(case):
    CASES["generated"] += 1
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


@schema.include(path_regex=r"\{session_id\}").parametrize()
@FUZZ
def test_session_operations_on_a_live_session_answer_as_documented(case, client):
    created = client.post("/api/sessions", json={"preset": "tiny"})
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    generated = (case.path_parameters or {}).get("session_id", "")
    # A generated id that breaks the id pattern is what a negative case is testing: keep it.
    if SESSION_ID.fullmatch(str(generated)):
        case.path_parameters = {**case.path_parameters, "session_id": session_id}
        CASES["live session"] += 1
    else:
        CASES["live test, malformed id kept"] += 1
    try:
        case.call_and_validate(excluded_checks=[positive_data_acceptance])
    finally:
        client.delete(f"/api/sessions/{session_id}")
