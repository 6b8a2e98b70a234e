from pathlib import Path

from app.openapi_document import render_openapi

COMMITTED = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_openapi_is_current() -> None:
    assert COMMITTED.read_text() == render_openapi(), "openapi/openapi.json is stale: make openapi"


def test_every_operation_has_a_stable_id_and_declares_its_problems() -> None:
    import json

    document = json.loads(render_openapi())
    ids = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            ids.append(operation["operationId"])
            if path.startswith("/v1/"):
                problems = [
                    status
                    for status, response in operation["responses"].items()
                    if "application/problem+json" in response.get("content", {})
                ]
                assert "401" in problems, f"{method.upper()} {path} does not declare 401"
    assert len(ids) == len(set(ids))
