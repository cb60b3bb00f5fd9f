"""Broker and backend URLs as they may be shown: every credential masked.

A URL reaches a banner, a log line or an error message in many places; each of them
prints ``mask_url(url)``, never the URL. The forms masked are all those kombu and redis-py
accept: a password in the user part (``redis://:secret@host``, ``amqp://user:secret@host``,
``unix://:secret@/path``), a failover list joined with ``;`` (each URL on its own), and
options in the query string (dropped whole: ``?password=...`` is one of redis-py's forms,
and no query option is worth the risk in a log).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from kombu.utils.url import maybe_sanitize_url

MASK = "**"


def mask_url(url: str | None) -> str:
    """``url`` with every credential masked; the scheme and host stay, to say where."""
    if not url:
        return ""
    return ";".join(_mask_one(part.strip()) for part in url.split(";"))


def _mask_one(url: str) -> str:
    if "@" not in url and "?" not in url:
        return url  # nothing to hide: shown exactly as given
    try:
        masked = str(maybe_sanitize_url(url, mask=MASK))
    except (ValueError, TypeError):
        return _bare(url)  # kombu could not parse it: show less, never more
    # kombu keeps what it does not recognise as a URL; a query it always drops.
    if "?" in masked or ("@" in masked and f":{MASK}@" not in masked and _has_password(url)):
        return _bare(url)
    return masked


def _has_password(url: str) -> bool:
    userinfo = url.partition("://")[2].rpartition("@")[0]
    return ":" in userinfo


def _bare(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK
    _, at, hostpart = rest.rpartition("@")
    host = hostpart.split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{MASK + '@' if at else ''}{host}"


# A URL inside free text (an error message, a log line): scheme://, then up to the next
# whitespace or closing quote/bracket.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)\]]+")


def scrub(text: str) -> str:
    """``text`` with every URL in it masked: for messages that quote a library's errors."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)


def credentials_in_userinfo(url: str) -> str:
    """``url`` with a ``?password=`` / ``?username=`` query option moved to its user part.

    redis-py reads credentials from the query string too; kombu takes them from the user
    part only, and fails on a URL that gives them in the query. Each URL of a failover
    list is rewritten on its own; any other option stays in the query.
    """
    return ";".join(_move_credentials(part) for part in url.split(";"))


def _move_credentials(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {k: v for k, v in query if k in ("username", "password")}
    if not given:
        return url
    if parts.password is not None or (parts.username and "username" in given):
        raise ValueError("the URL gives credentials both before the host and in its query")
    user = quote(given.get("username", parts.username or ""), safe="")
    password = quote(given.get("password", ""), safe="")
    userinfo = f"{user}:{password}@" if "password" in given else f"{user}@"
    host = parts.netloc.rpartition("@")[2]
    rest = urlencode([(k, v) for k, v in query if k not in given])
    return urlunsplit((parts.scheme, userinfo + host, parts.path, rest, parts.fragment))
