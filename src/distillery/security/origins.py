"""Which ``Host`` and ``Origin`` headers the server answers: DNS rebinding and cross-site requests.

A page on another site can make a browser send simple requests (``POST`` with a ``text/plain``,
form or multipart body) to a server on loopback, and a DNS-rebinding page can even read the
answers, since its own name then resolves to 127.0.0.1: the browser sends ``Host: evil.example``.
So the server answers only the host names it trusts (``[server] trusted_hosts``; by default the
loopback names when it is bound to loopback), and a browser request that changes state must come
from an origin with a trusted name that is the server's own.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY = "*"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def trusted_hosts(configured: list[str] | None, bind_host: str) -> tuple[str, ...]:
    """The host names to answer: ``configured`` (lower-cased), else the loopback names (and the
    bind address) when bound to loopback, else any (``("*",)``)."""
    if configured is not None:
        return tuple(h.strip().lower().strip("[]") for h in configured if h.strip())
    if is_loopback(bind_host):
        return tuple(dict.fromkeys([*LOOPBACK_NAMES, bind_host.lower().strip("[]")]))
    return (ANY,)


def host_name(authority: str) -> str:
    """``example.com:8000`` -> ``example.com``, ``[::1]:8000`` -> ``::1`` (lower case)."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[1:end] if end > 0 else authority
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


def name_trusted(name: str, trusted: tuple[str, ...]) -> bool:
    for pattern in trusted:
        if pattern in (ANY, name):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
            return True
    return False


def host_allowed(host_header: str | None, trusted: tuple[str, ...]) -> bool:
    """Whether a request with this ``Host`` header is answered (no header: not a browser)."""
    if host_header is None or trusted == (ANY,):
        return True
    return name_trusted(host_name(host_header), trusted)


def same_origin(origin: str, host_header: str | None, trusted: tuple[str, ...]) -> bool:
    """Whether a browser's ``Origin`` is this server: its authority is the ``Host`` it sent and
    its name is trusted, so a rebinding page (whose origin and Host agree) is not."""
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if host_header is None or parts.netloc.lower() != host_header.strip().lower():
        return False
    return name_trusted(host_name(parts.netloc), trusted)
