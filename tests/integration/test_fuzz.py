"""Fuzzing the API from its own OpenAPI document (schemathesis), with a valid key, against a real
database: no response is a server error, and every response matches the document."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import make_team, report

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def pro_key(conn):
    return make_team(conn, "fuzz", "pro")[1]


def test_api_matches_its_openapi_document(app, pro_key):
    # schemathesis's pytest plugin does not support pytest 9 yet, so drive hypothesis directly.
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {pro_key}"}
    cases = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=int(os.environ.get("ASYNCQUEUE_FUZZ_EXAMPLES", "100")),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            label = f"{case.method} {case.path}"
            cases[label] = cases.get(label, 0) + 1
            assert response.status_code < 500

        fuzz()
    report(
        f"fuzz: {sum(cases.values())} schemathesis cases {cases}, 0 responses >= 500, "
        "every response matched the OpenAPI document"
    )
    assert len(cases) == 4 and all(n >= 10 for n in cases.values())
