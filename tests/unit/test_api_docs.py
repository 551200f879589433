"""docs/api.md agrees with the OpenAPI document the service serves: every operation, request
field and its default, enum value, list parameter, task field and error status is in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncqueue.api.openapi import openapi_document

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
SPEC = openapi_document()


def _table_rows(heading: str) -> dict[str, list[str]]:
    """The body rows of the first table from `heading` on, by their first cell (no backticks)."""
    lines = []
    for line in DOC.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    rows = {}
    for line in lines[2:]:  # after the header and its |---| line
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


@pytest.mark.parametrize(
    "method, path", [(m.upper(), p) for p, ops in SPEC["paths"].items() for m in ops]
)
def test_every_operation_has_a_section(method, path):
    assert f"`{method} {path}`" in DOC


def test_every_request_field_with_its_default_and_choices():
    rows = _table_rows("### Request fields")
    schema = SPEC["components"]["schemas"]["NewTask"]
    assert list(rows) == list(schema["properties"])  # same fields, same (validation) order
    for name, prop in schema["properties"].items():
        default_cell = rows[name][1]
        if prop.get("default") is not None:
            shown = prop["default"]
            shown = int(shown) if isinstance(shown, float) and shown.is_integer() else shown
            assert default_cell == f"`{json.dumps(shown)}`", name
        for choice in prop.get("enum", []):
            if choice is not None:  # null: "not given", said once above the table
                assert f"`{choice}`" in rows[name][2], (name, choice)
        if "maxLength" in prop and prop.get("format") == "uri":
            assert f"{prop['maxLength']:,}" in rows[name][2]
    assert schema["required"] == ["callbackUrl"] and rows["callbackUrl"][1] == "—"


def test_every_list_parameter_with_its_default():
    rows = _table_rows("## List tasks")
    params = SPEC["paths"]["/v1/tasks"]["get"]["parameters"]
    assert [p["name"] for p in params] == list(rows)
    for p in params:
        default = p["schema"].get("default")
        if default is not None:
            assert rows[p["name"]][0] == f"`{default}`", p["name"]
        for choice in p["schema"].get("enum", []):
            assert choice in DOC


def test_every_task_field_and_status():
    rows = _table_rows("## The task object")
    task = SPEC["components"]["schemas"]["Task"]["properties"]
    assert list(rows) == list(task)
    for status in task["status"]["enum"]:
        assert f"| `{status}` |" in DOC
    result_rows = _table_rows("### The result")
    assert set(result_rows) == set(SPEC["components"]["schemas"]["Result"]["properties"])


def test_every_error_status_is_explained():
    rows = _table_rows("## Errors")
    statuses = {
        code
        for ops in SPEC["paths"].values()
        for op in ops.values()
        for code in op["responses"]
        if int(code) >= 400
    }
    explained = {code for first_cell in rows for code in first_cell.split(", ")}
    assert statuses <= explained, statuses - explained
