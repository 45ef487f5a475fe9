"""Host URLs (NDIF host, judge endpoint): https anywhere, http on this machine only, no other scheme, no credentials."""

import pytest

from harness.models.urls import checked_host_url

SAFE = ["https://api.ndif.us", "https://judge.example.org:8443/v1", "http://localhost:8001", "http://LOCALHOST",
        "http://127.0.0.1:5999", "http://127.8.0.3/", "http://[::1]:8001/v1", "  https://api.ndif.us  "]

REFUSED = [
    ("http://10.0.0.7:8001", "plain http is refused"),
    ("http://api.ndif.us", "plain http is refused"),
    ("http://128.0.0.1", "plain http is refused"),
    ("http://[::2]", "plain http is refused"),
    ("http://localhost.evil.com", "plain http is refused"),
    ("file:///etc/passwd", "must start with https://"),
    ("ftp://api.ndif.us", "must start with https://"),
    ("api.ndif.us", "must start with https://"),
    ("https://user:secret@api.ndif.us", "credentials in a URL"),
    ("http://token@localhost:8001", "credentials in a URL"),
    ("https://", "names no host"),
    ("https://api.ndif.us:port", "Port could not be cast"),
]


@pytest.mark.parametrize("url", SAFE)
def test_https_anywhere_and_http_on_this_machine_are_accepted(url):
    assert checked_host_url(url, "--remote") == url.strip()


@pytest.mark.parametrize("url, reason", REFUSED)
def test_unsafe_host_urls_are_refused_naming_the_source_and_the_rule(url, reason):
    with pytest.raises(ValueError, match=reason) as err:
        checked_host_url(url, "--remote")
    assert str(err.value).startswith("--remote ") and "secret" not in str(err.value)
