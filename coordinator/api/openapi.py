"""Endpoints of the JSON API as data, and the OpenAPI 3.1 document made from them.

An :class:`Endpoint` names its handler and the msgspec types it reads (body,
query, path) and answers; :func:`routes` turns the list into Starlette routes
and :func:`document` into the OpenAPI document, with schemas from
``msgspec.json.schema_components`` — the same types that validate requests.
A new endpoint is one more ``Endpoint`` in the list; nothing else to keep in step.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.api.errors import CODES, ErrorBody, ErrorCode
from coordinator.i18n import gettext_noop as N_

Handler = Callable[[Request], Awaitable[Response]]
REF = "#/components/schemas/{name}"
SECURITY_SCHEME = "apiKey"


@dataclass(frozen=True)
class Binary:
    """A response that is a file, not JSON."""

    media_types: tuple[str, ...]
    description: str
    # The schema of each item, where the answer is a stream of them (server-sent
    # events: each event an object of its fields); None: one opaque file.
    item_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str  # English, marked with N_ so the reference page can translate it
    description: str = ""
    body: type | None = None
    query: type | None = None
    path_params: type | None = None
    status: int = 200
    response: type | Binary | None = None  # None: no body
    response_description: str = N_("OK")
    response_schema: dict[str, Any] | None = None  # a JSON answer with no struct of its own
    errors: tuple[ErrorCode, ...] = ()
    auth: bool = True
    tag: str = "jobs"
    links: dict[str, dict[str, Any]] = field(default_factory=dict)  # OpenAPI links of the answer
    example_path: str = ""  # the path with sample values, for the curl example
    example_body: dict[str, Any] | None = None
    extra_curl: tuple[str, ...] = field(default=())

    def curl(self) -> str:
        """A working curl command; the reader sets SHAPEFARM_URL and SHAPEFARM_KEY."""
        words = ["curl", "-sS"]
        if self.method != "GET":
            words += ["-X", self.method]
        url = '"$SHAPEFARM_URL' + (self.example_path or self.path) + '"'
        words.append(url)
        if self.auth:
            words += ["-H", '"Authorization: Bearer $SHAPEFARM_KEY"']
        if self.example_body is not None:
            words += ["-H", shlex.quote("Content-Type: application/json")]
            words += ["-d", shlex.quote(json.dumps(self.example_body))]
        words += list(self.extra_curl)
        return " ".join(words)


def routes(endpoints: Sequence[Endpoint]) -> list[Route]:
    """One route per path, whatever its methods: a 405's ``Allow`` then lists them all."""
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint.handler
    return [
        Route(path, _by_method(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]


def _by_method(handlers: dict[str, Handler]) -> Handler:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return dispatch


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as a parameter's schema: absent already means None."""
    options = schema.get("anyOf")
    if options:
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            if rest.get("default", "") is None:
                del rest["default"]
            return {**kept[0], **rest}
    return schema


def _parameters(kind: type, where: str, components: dict[str, Any]) -> list[dict[str, Any]]:
    """One OpenAPI parameter per field of a query or path struct."""
    schema = components[kind.__name__]
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = _without_null(dict(prop))
        description = prop.get("description", "")
        params.append(
            {
                "name": name,
                "in": where,
                "required": where == "path" or name in required,
                "description": description,
                "schema": prop,
            }
        )
    return params


def _error_responses(endpoint: Endpoint) -> dict[str, Any]:
    by_status: dict[int, list[ErrorCode]] = {}
    for code in endpoint.errors:
        status = CODES[code].status
        assert status is not None, code
        by_status.setdefault(status, []).append(code)
    answers: dict[str, Any] = {}
    error_ref = {"$ref": REF.format(name="ErrorBody")}
    for status, codes in sorted(by_status.items()):
        names = ", ".join(f"`{code}`" for code in codes)
        answers[str(status)] = {
            "description": f"Error: {names}.",
            "content": {"application/json": {"schema": error_ref}},
        }
    answers["default"] = {
        "description": "Any other error, in the same shape (e.g. `body_too_large`, "
        "`method_not_allowed`, `internal_error`).",
        "content": {"application/json": {"schema": error_ref}},
    }
    return answers


def _operation(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "x-codeSamples": [{"lang": "Shell", "label": "curl", "source": endpoint.curl()}],
    }
    if endpoint.description:
        op["description"] = endpoint.description
    params: list[dict[str, Any]] = []
    if endpoint.path_params is not None:
        params += _parameters(endpoint.path_params, "path", components)
    if endpoint.query is not None:
        params += _parameters(endpoint.query, "query", components)
    if params:
        op["parameters"] = params
    if endpoint.body is not None:
        media: dict[str, Any] = {"schema": {"$ref": REF.format(name=endpoint.body.__name__)}}
        if endpoint.example_body is not None:
            media["example"] = endpoint.example_body
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    ok: dict[str, Any] = {"description": endpoint.response_description}
    if isinstance(endpoint.response, Binary):
        ok["description"] = endpoint.response.description
        ok["content"] = {
            media_type: {
                "schema": endpoint.response.item_schema
                or {"type": "string", "contentMediaType": media_type}
            }
            for media_type in endpoint.response.media_types
        }
    elif endpoint.response is not None:
        ref = {"$ref": REF.format(name=endpoint.response.__name__)}
        ok["content"] = {"application/json": {"schema": ref}}
    elif endpoint.response_schema is not None:
        ok["content"] = {"application/json": {"schema": endpoint.response_schema}}
    if endpoint.links:
        ok["links"] = endpoint.links
    op["responses"] = {str(endpoint.status): ok, **_error_responses(endpoint)}
    op["security"] = [{SECURITY_SCHEME: []}] if endpoint.auth else []
    return op


def document(
    endpoints: Sequence[Endpoint], *, title: str, version: str, description: str
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``."""
    kinds: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        for kind in (endpoint.body, endpoint.query, endpoint.path_params, endpoint.response):
            if isinstance(kind, type) and kind not in kinds:
                kinds.append(kind)
    _, components = msgspec.json.schema_components(kinds, ref_template=REF)
    for schema in components.values():  # docstrings: one paragraph, no indentation
        if "description" in schema:
            schema["description"] = " ".join(schema["description"].split())
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(
            endpoint, components
        )
    _ecma_patterns(components)
    _ecma_patterns(paths)
    for endpoint in endpoints:  # parameters, not bodies: described in place
        for kind in (endpoint.query, endpoint.path_params):
            if kind is not None:
                components.pop(kind.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "jobs", "description": "Submit, watch and download models."},
            {"name": "meta", "description": "About the API itself."},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "sfk.<id>.<secret>",
                    "description": "A personal API key, made on your Profile page.",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
        "x-error-codes": error_codes(),
    }


def _ecma_patterns(node: Any) -> None:
    """Python's end-of-text ``\\Z`` is ECMA-262's ``$`` (JSON Schema regexes are ECMA)."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("\\Z"):
            node["pattern"] = pattern[:-2] + "$"
        for value in node.values():
            _ecma_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _ecma_patterns(value)


def error_codes() -> list[dict[str, Any]]:
    """Every error code with its status and meaning (for the reference page and docs)."""
    return [
        {"code": str(code), "status": info.status, "description": info.description}
        for code, info in CODES.items()
    ]
