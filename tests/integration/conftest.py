"""Integration tests use the real Docker engine and host; the fixtures live in tests/support/host.py
(shared by every folder through tests/conftest.py), the helpers are re-exported here."""

from tests.support.host import API_TOKEN, AUTH, TEST_IMAGE_NAME, Host, add_group, bind, make_settings

__all__ = ["AUTH", "API_TOKEN", "TEST_IMAGE_NAME", "Host", "add_group", "bind", "make_settings"]
