"""The API reference page at ``/api``: the OpenAPI document, readable by people.

It renders the very document served at ``/api/v1/openapi.json`` (the app hands
it over as ``app.state.api_document``), so the page lists exactly the endpoints,
parameters, bodies and error codes the API has. Texts from the document are
English and marked for translation where they are defined (``N_``); the page
translates them when shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.request_context import farm_of
from coordinator.web.base import current_user, render

Schema = dict[str, Any]


@dataclass(frozen=True)
class Field:
    name: str
    where: str  # "path", "query" or "body"
    kind: str  # e.g. "integer, 1–1024"
    required: bool
    default: str
    description: str


@dataclass(frozen=True)
class Operation:
    anchor: str
    method: str
    path: str
    summary: str
    description: str
    auth: bool
    fields: list[Field]
    status: str
    success: str
    errors: list[str]
    curl: str


def _resolve(schema: Schema, components: dict[str, Schema]) -> Schema:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return {
            **components[ref.rsplit("/", 1)[-1]],
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


def describe(schema: Schema, components: dict[str, Schema]) -> str:
    """A schema in a few words: "integer, 1–1024", "one of: glb, obj", "string, ≤ 500"."""
    schema = _resolve(schema, components)
    if "anyOf" in schema:
        return " | ".join(describe(option, components) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of: " + ", ".join(str(value) for value in schema["enum"])
    kind = str(schema.get("type", "any"))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"{kind}, {low}–{high}"
    if "maxLength" in schema:
        return f"{kind}, length {schema.get('minLength', 0)}–{schema['maxLength']}"
    if kind == "array" and "items" in schema:
        return f"array of {describe(schema['items'], components)}"
    return kind


def _fields(op: Schema, components: dict[str, Schema]) -> list[Field]:
    fields = [
        Field(
            p["name"],
            p["in"],
            describe(p["schema"], components),
            bool(p.get("required")),
            _default(p["schema"]),
            p.get("description", ""),
        )
        for p in op.get("parameters", [])
    ]
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        schema = _resolve(body["schema"], components)
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            fields.append(
                Field(
                    name,
                    "body",
                    describe(prop, components),
                    name in required,
                    _default(prop),
                    prop.get("description", ""),
                )
            )
            fields += _members(name, prop, components)
    return fields


def _members(name: str, prop: Schema, components: dict[str, Schema]) -> list[Field]:
    """The fields of a nested object (e.g. ``mesh.target_faces``), one row each."""
    options = [_resolve(prop, components)]
    options += [_resolve(o, components) for o in options[0].get("anyOf", [])]
    for option in options:
        members = option.get("properties")
        if isinstance(members, dict):
            inner = set(option.get("required", ()))
            return [
                Field(
                    f"{name}.{key}",
                    "body",
                    describe(member, components),
                    key in inner,
                    _default(member),
                    member.get("description", ""),
                )
                for key, member in members.items()
            ]
    return []


def _default(schema: Schema) -> str:
    if "default" not in schema:
        return ""
    value = schema["default"]
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def operations(document: Schema) -> list[Operation]:
    components: dict[str, Schema] = document["components"]["schemas"]
    found = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            status, success = next(iter(op["responses"].items()))
            errors = sorted(
                code
                for answer in op["responses"].values()
                for code in _codes(answer.get("description", ""))
            )
            found.append(
                Operation(
                    anchor=op["operationId"],
                    method=method.upper(),
                    path=path,
                    summary=op["summary"],
                    description=op.get("description", ""),
                    auth=bool(op.get("security", document.get("security"))),
                    fields=_fields(op, components),
                    status=status,
                    success=success["description"],
                    errors=errors if status != "default" else [],
                    curl=op["x-codeSamples"][0]["source"],
                )
            )
    return found


def _codes(description: str) -> list[str]:
    """The codes an error response names ("Error: `a`, `b`."); the default names none."""
    if not description.startswith("Error:"):
        return []
    return [part for i, part in enumerate(description.split("`")) if i % 2 == 1]


async def reference(request: Request) -> Response:
    document: Schema = request.app.state.api_document
    async with farm_of(request).sessions() as db:
        user = await current_user(request, db)
    return render(
        request,
        "api.html",
        user,
        operations=operations(document),
        codes=document["x-error-codes"],
        base_url=str(request.base_url).rstrip("/"),
    )


ROUTES = [Route("/api", reference, methods=["GET"])]
