"""TLS to Redis (``rediss://``) with certificate and host name checks on, always.

Celery's broker transport (kombu) quietly turns a bare ``rediss://`` URL into an
encrypted but *unchecked* connection (``ssl_cert_reqs=CERT_NONE``): anyone on the
path can pose as the server and read the password. distloop therefore never
leaves TLS settings to the URL's defaults. It hands explicit options to Celery's
broker (``broker_use_ssl``), its result backend (``redis_backend_use_ssl``) and
every redis-py client, and refuses a URL that asks for no checks unless the user
turns them off on purpose (``DISTLOOP_TLS_INSECURE=1``).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from distloop.tasks.core.errors import UsageError

#: URL query parameters that configure TLS (redis-py and Celery spell them so).
TLS_QUERY_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")

_UNCHECKED = {"none", "cert_none", "optional", "cert_optional"}
_NO = {"false", "0", "no", "off"}


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def _query(url: str) -> dict[str, str]:
    return {k: unquote(v) for k, v in parse_qsl(urlsplit(url).query)}


def check_tls_url(url: str, insecure: bool, tls_files: bool) -> None:
    """Raise :class:`UsageError` (one line) for TLS settings that do not add up or skip checks."""
    query = _query(url)
    if not is_tls(url):
        if tls_files or any(k in query for k in TLS_QUERY_KEYS):
            raise UsageError(
                f"TLS settings given for a plain redis:// URL ({urlsplit(url).hostname}): use rediss:// for TLS"
            )
        return
    unchecked = query.get("ssl_cert_reqs", "required").lower() in _UNCHECKED
    unchecked = unchecked or query.get("ssl_check_hostname", "true").lower() in _NO
    if unchecked and not insecure:
        raise UsageError(
            f"the rediss:// URL for {urlsplit(url).hostname} turns certificate checks off; "
            "give the server's CA with DISTLOOP_TLS_CA_FILE, or set DISTLOOP_TLS_INSECURE=1 to accept that"
        )


def tls_options(
    url: str, ca_file: str | None, cert_file: str | None, key_file: str | None, insecure: bool
) -> dict[str, Any] | None:
    """redis-py TLS keyword arguments for ``url``; None for a plain ``redis://`` URL.

    Files named in the settings win over the same files named in the URL's query.
    """
    if not is_tls(url):
        return None
    query = _query(url)
    options: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_NONE if insecure else ssl.CERT_REQUIRED,
        "ssl_check_hostname": not insecure,
        "ssl_ca_certs": ca_file or query.get("ssl_ca_certs"),
        "ssl_certfile": cert_file or query.get("ssl_certfile"),
        "ssl_keyfile": key_file or query.get("ssl_keyfile"),
    }
    return {k: v for k, v in options.items() if v is not None}


def strip_tls_query(url: str) -> str:
    """``url`` without its TLS query parameters (they travel as explicit options instead)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in TLS_QUERY_KEYS]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
