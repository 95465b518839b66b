"""schemathesis against the app (in process, through ASGI), schema-valid and schema-violating requests, with
every default check: no 5xx, responses
and statuses as the OpenAPI document says, schema-violating requests rejected, Allow on 405.

The app needs the session's artifacts, so the schema is loaded in a fixture and each operation is driven
with Hypothesis directly (schemathesis' `from_fixture` does not run under this pytest)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from handler.api import create_app

pytestmark = pytest.mark.slow
EXAMPLES = 60  # per operation; derandomized (a fixed seed), so a CI failure replays here
FUZZ = {"max_examples": EXAMPLES, "derandomize": True, "deadline": None, "suppress_health_check": list(HealthCheck)}
OPERATIONS = ["POST /search", "POST /rerank", "POST /v1/rerank", "POST /v2/rerank", "GET /health"]


# A schema-violating body can also be refused for its size (413, before it is parsed): a rejection too.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


@pytest.fixture(scope="module")
def api_schema(retriever, settings):
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}})
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(retriever, settings), config=config)


def breaks_a_cross_field_rule(case) -> bool:
    """Rules the schema states in words (JSON Schema cannot compare fields): a top_k above the recall_k sent
    with it, and a v1 document object without the field it is read by. Such a request is schema-valid yet
    answered 422, so only the positive-acceptance check skips it."""
    body = case.body if isinstance(case.body, dict) else {}
    top_k, recall_k = body.get("top_k"), body.get("recall_k")
    if isinstance(top_k, int | float) and isinstance(recall_k, int | float) and top_k > recall_k:
        return True
    fields, documents = body.get("rank_fields"), body.get("documents")
    if case.path != "/v1/rerank" or not isinstance(documents, list):
        return False
    # a negative case may send non-string rank_fields (a 422 by the schema itself): read only the strings
    fields = [f for f in fields if isinstance(f, str)] if isinstance(fields, list) else []
    fields = fields or ["text"]
    return any(isinstance(d, dict) and not any(isinstance(d.get(f), str) for f in fields) for d in documents)


# GET /health takes no input, so there is nothing schema-violating to send it
RUNS = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, GenerationMode.NEGATIVE) for label in OPERATIONS if label.startswith("POST")
]


@pytest.mark.parametrize("label, mode", RUNS, ids=[f"{label} {mode.value}" for label, mode in RUNS])
def test_api_conforms_to_its_openapi_document(api_schema, label, mode, settings):
    operations = {op.label: op for op in (result.ok() for result in api_schema.get_all_operations())}
    assert set(OPERATIONS) <= set(operations), sorted(operations)

    @given(case=operations[label].as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case):
        skip = [positive_data_acceptance] if breaks_a_cross_field_rule(case) else None
        case.call_and_validate(excluded_checks=skip)

    fuzz()
