"""HTTP to the local services without any proxy (a proxy from the environment must never see
loopback traffic or credentials): health checks and small JSON calls."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def no_proxy_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores ``http_proxy`` / ``https_proxy``."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET ``url`` without any HTTP proxy; returns (status, body); (0, b"") if nothing answers."""
    try:
        with no_proxy_opener().open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp else b""
    except (OSError, urllib.error.URLError):
        return 0, b""


def http_post_json(url: str, payload: dict, timeout: float = 5.0) -> tuple[int, object]:
    """POST ``payload`` as JSON; returns (status, decoded body or None); (0, None) if nothing answers."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with no_proxy_opener().open(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, urllib.error.URLError, ValueError):
        return 0, None
