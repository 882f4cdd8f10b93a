"""OpenAPI description of the admin API (served at /openapi.json)."""

from __future__ import annotations

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OK = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}


def _op(summary: str, body: dict | None = None, params: list | None = None, secured: bool = True) -> dict:
    op: dict = {"summary": summary, "responses": {"200": _OK, "400": _ERR, "401": _ERR, "404": _ERR, "409": _ERR}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["201"] = _OK
    if params:
        op["parameters"] = params
    if not secured:
        op["security"] = []
        op["responses"] = {"200": _OK, "503": _OK}
    return op


_USER_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._+-]{0,63}$"}
_DB_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_ACTION = {
    "name": "action",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["suspend", "resume", "reseed"]},
}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "mailpair admin API", "version": "1"},
    "components": {
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}},
    },
    "security": [{"token": []}],
    "paths": {
        "/health": {"get": _op("Liveness of this node", secured=False)},
        "/health/active": {"get": _op("200 when this node is active (for load balancers)", secured=False)},
        "/health/passive": {"get": _op("200 when this node is passive", secured=False)},
        "/api/status": {"get": _op("This node's role, epoch and copy status per database")},
        "/api/pair": {"get": _op("Both nodes' status merged (the shape of `mailpair status --json`)")},
        "/api/events": {"get": _op("Recent events (start, stop, suspend, resume, reseed, failover)")},
        "/api/users": {
            "get": _op("List accounts"),
            "post": _op(
                "Add an account",
                body={
                    "type": "object",
                    "properties": {
                        "name": _USER_NAME,
                        "password": {"type": "string", "minLength": 1},
                        "quota": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807},
                        "database": {"type": "string"},
                    },
                    "required": ["name", "password"],
                },
            ),
        },
        "/api/users/{name}": {"delete": _op("Delete an account and its mail", params=[_NAME])},
        "/api/users/{name}/password": {
            "post": _op(
                "Set an account's password",
                body={"type": "object", "properties": {"password": {"type": "string", "minLength": 1}}, "required": ["password"]},
                params=[_NAME],
            )
        },
        "/api/users/{name}/quota": {
            "post": _op(
                "Set an account's quota in bytes (0: unlimited)",
                body={
                    "type": "object",
                    "properties": {"quota": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807}},
                    "required": ["quota"],
                },
                params=[_NAME],
            )
        },
        "/api/databases": {
            "get": _op("List databases"),
            "post": _op(
                "Create a database",
                body={"type": "object", "properties": {"name": _DB_NAME}, "required": ["name"]},
            ),
        },
        "/api/databases/{name}/copy/{action}": {"post": _op("Suspend, resume or reseed a copy", params=[_NAME, _ACTION])},
        "/api/nodes/{node}/databases/{name}/copy/{action}": {
            "post": _op(
                "Suspend, resume or reseed the copy on this node or its peer (relayed to the peer)",
                params=[{"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}, _NAME, _ACTION],
            )
        },
    },
}
