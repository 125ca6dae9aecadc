"""One way to hide credentials that ride inside URLs (`http://user:token@host/v1`, `?api_key=...`).

Used at every sink where a URL can be shown or stored: JSON files rualign writes (score.json, manifests,
run.json), judge names, the dry-run plan, and error messages on the terminal. Keys themselves are only
ever read from the environment (api_key_env), never from a file.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|auth|sig|signature|credential)", re.IGNORECASE)
# scheme://userinfo@ anywhere in a text (userinfo has no '/', '@' or whitespace)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"<>]+)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&][^=&\s#'\"]*(?:key|token|secret|password|passwd|pwd|sig)[^=&\s#'\"]*=)"
                           r"(?P<value>[^&\s#'\"]+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its userinfo and secret-looking query values replaced by ***; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL credential inside free text (an error message, a judge name) replaced by ***."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('name')}{MASK}", text)


def redact(obj: Any) -> Any:
    """`obj` (JSON-like: dicts, lists, strings) with every string passed through redact_text."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj
