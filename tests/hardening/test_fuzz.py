"""Schemathesis against the app's own OpenAPI document, through the ASGI app (no network).

Every operation is fuzzed with generated requests, valid and invalid, and each answer is checked
against the document: never a 500, only documented status codes and content types, bodies that
fit the documented schemas, invalid requests refused, unsupported methods answered 405 with a
correct Allow header. Operations on a session run twice: with generated ids (which must never
reach a store: 404) and with a live session's id swapped in, so the generated bodies reach the
engine.

Schemathesis runs with every check it has ("--checks all"), one of them in a stricter form of
our own: "positive data acceptance" wants a schema-valid request accepted, which no API with rules
JSON Schema cannot write can promise -- a spec must describe a network that fits its input, an
upload must hold a picture or a session file, a request must stay under the work and memory caps
(the OpenAPI document says so in each 422's description). So a schema-valid request may be
refused only with a 422 (or a 415 for an upload) whose detail is a sentence stating such a rule,
or a rule tying fields together ('label' goes with pixels; steps x batch_size under the cap);
a refusal for a schema reason (pydantic's list of {loc, msg, type}), an unparseable or oversized
body, is a failure: the document would have promised something the server does not accept.

``CNNVIZ_FUZZ_EXAMPLES`` sets the examples per operation (25 by default, so the default run
stays short); bench/adversarial.py runs it with enough for more than 5,000 cases.
"""

import atexit
import os
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
EXAMPLES = int(os.environ.get("CNNVIZ_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
CASES = {"generated": 0, "live session": 0, "live test, malformed id kept": 0}


@schemathesis.check
def schema_valid_requests_are_refused_only_for_stated_rules(ctx, response, case):
    """Positive data acceptance, with the rules JSON Schema cannot express (see above)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.method.upper() == "OPTIONS":
        return None
    status = response.status_code
    if status in (400, 413):
        raise AssertionError(f"a schema-valid request was refused with {status}: "
                             f"{response.text[:300]}")
    if status in (415, 422):
        detail = response.json().get("detail")
        # a rule that ties several fields together (pydantic reports it at the body itself)
        combined = isinstance(detail, list) and all(
            problem["loc"] == ["body"] and problem["type"] == "value_error" for problem in detail)
        if not isinstance(detail, str) and not combined:
            raise AssertionError(f"a schema-valid request was refused for a schema reason: "
                                 f"{str(detail)[:300]}")
    return None


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
