"""The access log's ``remote`` is the client's address, also behind a proxy the operator trusts
(``HTTP_TRUSTED_PROXIES``): it was the proxy's for every request behind nginx, whose configuration
sets ``X-Forwarded-For`` "so the service's logs show the real client"."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from aiohttp.test_utils import make_mocked_request

from config.settings import Settings
from service.logs import client_address


def _request(remote: str, forwarded: str | None) -> object:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    request = make_mocked_request("GET", "/hub/recommendations", headers=headers)
    return request.clone(remote=remote)


TRUSTED = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # through our proxy
        ("10.0.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the left part is the client's say
        ("10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # two proxies of ours
        ("203.0.113.8", "1.2.3.4", "203.0.113.8"),  # not through a trusted proxy: the header is ignored
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "10.0.0.9", "10.0.0.9"),  # nothing but proxies: the first one
        ("fd00::1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_behind_trusted_proxies(remote: str, forwarded: str | None, expected: str) -> None:
    assert client_address(_request(remote, forwarded), TRUSTED) == expected  # type: ignore[arg-type]


def test_nothing_is_trusted_by_default() -> None:
    assert client_address(_request("10.0.0.5", "203.0.113.7"), ()) == "10.0.0.5"  # type: ignore[arg-type]
    settings = Settings(_env_file=None, auth_dev_mode=True, http_trusted_proxies="10.0.0.0/8, 172.16.0.0/12")
    assert settings.http_trusted_proxies == [ip_network("10.0.0.0/8"), ip_network("172.16.0.0/12")]
    assert Settings(_env_file=None, auth_dev_mode=True).http_trusted_proxies == []
