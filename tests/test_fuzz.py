"""Every operation of the API, fuzzed from its own OpenAPI document: no input is a 500.

schemathesis generates requests from ``/api/openapi.json``, inputs that fit the declared
schemas and inputs just outside them, and each is sent twice, with a login token and with
an API key, to the app on SQLite and on PostgreSQL. Examples are derandomized and bounded,
so a run is the same every time and takes a few minutes. Checks: no server error, and every
response matches the schema the document declares for it. Failures are gathered across
operations, so one run reports them all.
"""

from __future__ import annotations

import contextlib

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.fixtures.api import Account

EXAMPLES_PER_OPERATION = 15
CHECKS = [not_a_server_error, response_schema_conformance]

pytestmark = pytest.mark.slow  # thousands of requests


def test_no_input_is_a_server_error_or_off_schema(
    app: FastAPI, client: TestClient, account: Account
) -> None:
    key = client.post("/auth/api-keys", json={"name": "fuzz"}, headers=account.headers)
    credentials = [account.headers, {"Authorization": f"Bearer {key.json()['key']}"}]
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    # Signing out ends the login token's session: fuzz it last, or nothing after it is reached.
    operations.sort(key=lambda operation: operation.path == "/auth/sign-out")
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz(operation, mode, credentials)
    assert not failures, "\n\n".join(failures)


def fuzz(
    operation: APIOperation, mode: GenerationMode, credentials: list[dict[str, str]]
) -> list[str]:
    """The first failure of each credential on this operation, as readable lines."""
    failures: list[str] = []

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def send(case: schemathesis.Case) -> None:
        for headers in credentials:
            response = case.call(headers=headers)
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except AssertionError as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        send()  # unsatisfiable: nothing to make invalid, no parameters and no body
    return failures[:2]
