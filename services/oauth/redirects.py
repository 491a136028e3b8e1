"""Where the hosted flow may send the browser back: under one of the app's allowed origins.

An origin entry is `scheme://host[:port]`, optionally with a path; `redirect_to` must have the
same scheme, host and port and, when the entry has a path, start with it on a segment
boundary. Checked at authorize and again at the callback (the app may have changed).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def _split(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        raise ValueError("must be an http(s) URL with a host and no user info")
    if any(c in url for c in "\r\n\t \\"):
        raise ValueError("must not hold spaces, line breaks or backslashes")
    port = parts.port or _DEFAULT_PORTS[scheme]
    return scheme, parts.hostname.lower(), port, parts.path


def normal_origin(value: str) -> str:
    """An allowed-origin entry, normalised (lower-case scheme and host, no query)."""
    scheme, host, port, path = _split(value)
    netloc = host if ":" not in host else f"[{host}]"
    if port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, path.rstrip("/"), "", ""))


def allowed(redirect_to: str, origins: list[str]) -> bool:
    try:
        scheme, host, port, path = _split(redirect_to)
    except ValueError:
        return False
    for entry in origins:
        try:
            e_scheme, e_host, e_port, e_path = _split(entry)
        except ValueError:
            continue
        if (scheme, host, port) != (e_scheme, e_host, e_port):
            continue
        prefix = e_path.rstrip("/")
        if not prefix or path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def with_params(url: str, **params: str) -> str:
    """`url` with query parameters added (ours replace any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
