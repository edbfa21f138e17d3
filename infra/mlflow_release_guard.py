"""MLflow basic-auth plus a release guard: only release managers may move the ``champion`` alias.

The MLflow server runs its built-in authentication (``mlflow server --app-name basic-auth``). Its
permission model is per registered model: setting *any* alias needs only EDIT on the model, and
the pipeline user needs EDIT to register versions and set ``challenger``. So permissions alone
cannot keep the pipeline (or anyone with EDIT) from setting ``champion``. This module is the
basic-auth config's ``authorization_function`` (a documented hook of MLflow's auth app): it
authenticates exactly as the built-in ``authenticate_request_basic_auth`` does, then answers
**HTTP 403** itself when a user who is not a release manager

* sets or deletes a protected alias (``champion``) on a registered model, or
* deletes or renames a registered model, or deletes a model version (that would drop or
  re-point ``champion`` without touching the alias route).

Everything else is left to MLflow's own permission checks (the release managers' role has
MANAGE on ``registered_model *``; the pipeline's EDIT; everyone else the default READ).

Configuration: the ``[sidn]`` section of the auth config file (``MLFLOW_AUTH_CONFIG_PATH``)::

    [sidn]
    release_managers = sidn-release       ; comma-separated user names
    protected_aliases = champion

The server imports this module by name (``mlflow_release_guard``): ``infra/`` is on its
``PYTHONPATH`` (``infra/mlflow_auth.py`` sets it, for `make up` and the test fixture). It imports only the standard
library at import time; Flask and MLflow come from the server process.
"""

from __future__ import annotations

import configparser
import functools
import os
from typing import Any

#: route suffixes (after /api/2.0/mlflow or /ajax-api/2.0/mlflow) and methods the guard watches
ALIAS_ROUTE = "/registered-models/alias"
DESTRUCTIVE_ROUTES = {
    ("/registered-models/delete", "DELETE"),
    ("/registered-models/rename", "POST"),
    ("/model-versions/delete", "DELETE"),
}


@functools.lru_cache(maxsize=1)
def guard_config() -> tuple[frozenset[str], frozenset[str]]:
    """``(release_managers, protected_aliases)`` from the ``[sidn]`` section of the auth config.

    With no section, nobody is a release manager and ``champion`` is protected (fail closed).
    """
    parser = configparser.ConfigParser()
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if path:
        parser.read(path)
    section = parser["sidn"] if parser.has_section("sidn") else {}
    managers = frozenset(u.strip() for u in str(section.get("release_managers", "")).split(",") if u.strip())
    aliases = frozenset(a.strip().lower() for a in str(section.get("protected_aliases", "champion")).split(",")
                        if a.strip())
    return managers, aliases


def _param(request: Any, key: str) -> str:
    """A request parameter from the JSON body (POST/DELETE) or the query string."""
    body = request.get_json(force=True, silent=True) if request.method in ("POST", "DELETE", "PATCH") else None
    value = (body or {}).get(key) if isinstance(body, dict) else None
    return str(value if value is not None else request.args.get(key, ""))


def refusal(request: Any, username: str) -> str | None:
    """Why ``username`` may not make ``request`` (a Flask request), or None when the guard allows it."""
    managers, aliases = guard_config()
    if username in managers:
        return None
    path = request.path.rstrip("/")
    if path.endswith(ALIAS_ROUTE) and request.method in ("POST", "DELETE"):
        alias = _param(request, "alias").strip().lower()
        if alias in aliases:
            return (f"only release managers may set or delete the alias '{alias}' "
                    f"(model '{_param(request, 'name')}')")
    for suffix, method in DESTRUCTIVE_ROUTES:
        if path.endswith(suffix) and request.method == method:
            return f"only release managers may {suffix.rsplit('/', 1)[1]} registered models or versions"
    return None


def authenticate_request() -> Any:
    """The basic-auth ``authorization_function`` with the release guard (see the module doc).

    Returns the request's ``Authorization`` (authenticated and allowed), or a Flask ``Response``:
    401 from basic auth, or 403 from the guard.
    """
    from flask import Response, make_response, request
    from mlflow.server.auth import authenticate_request_basic_auth

    result = authenticate_request_basic_auth()
    if isinstance(result, Response):  # 401: no or wrong credentials
        return result
    why = refusal(request, result.username or "")
    if why is None:
        return result
    response = make_response(f"Permission denied: {why}", 403)
    response.mimetype = "text/plain"
    return response
