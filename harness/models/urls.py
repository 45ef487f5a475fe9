"""The one check every host URL the harness talks to passes (the NDIF host, the judge endpoint).

A host gets the API key and the prompts, so: ``https`` for any host, plain ``http`` only on this machine (``localhost``,
``127.0.0.0/8``, ``[::1]``); no other scheme (``file://``, ``ftp://``); no credentials in the URL (keys travel in
headers, never in a URL that lands in logs and manifests).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address, brackets stripped) names this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_host_url(url: str, what: str) -> str:
    """``url`` stripped of surrounding space if it is a safe host URL, else a ValueError naming ``what`` (the option
    or variable it came from) and the rule it breaks; the message never repeats a password."""
    text = url.strip()
    parts = urlsplit(text)
    shown = text if "@" not in parts.netloc else text.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1])
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{what} {shown!r}: the URL must start with https:// (http:// only for localhost)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} {shown!r}: credentials in a URL are refused; pass the API key in its variable")
    try:
        host, _ = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError as err:
        raise ValueError(f"{what} {shown!r}: {err}") from None
    if not host:
        raise ValueError(f"{what} {shown!r}: the URL names no host")
    if parts.scheme.lower() == "http" and not is_loopback(host):
        raise ValueError(f"{what} {shown!r}: plain http is refused for a host other than this machine; use https://")
    return text
