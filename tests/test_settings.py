"""Settings: defaults, sources, and refusals that name the bad variable."""

from __future__ import annotations

import re
from ipaddress import ip_network
from pathlib import Path

import pytest

from nanohost.settings import SettingsError, load_settings, parse_memory


def test_defaults_live_in_the_data_dir(host_env: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == host_env / "data"
    assert settings.db_url == f"sqlite:///{host_env / 'data' / 'nanohost.db'}"
    assert re.fullmatch(r"nanohost-agent:0\.138\.0-[0-9a-f]{12}", settings.image_tag)  # + content hash
    assert settings.web_host == "127.0.0.1"
    assert settings.idle_timeout == 1800
    assert settings.sweep_interval == 60
    assert settings.api_token is None


def test_environment_and_dotenv_are_read(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (host_env / ".env").write_text("NANOHOST_WEB_PORT=9999\nNANOHOST_LOG_LEVEL=debug\n")
    monkeypatch.setenv("NANOHOST_MAX_CONTAINERS", "3")
    monkeypatch.setenv("NANOHOST_DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    settings = load_settings()
    assert settings.web_port == 9999
    assert settings.log_level == "DEBUG"
    assert settings.max_containers == 3
    assert settings.db_url == "sqlite:////tmp/elsewhere.db"


def test_the_environment_wins_over_dotenv(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (host_env / ".env").write_text("NANOHOST_WEB_PORT=9999\n")
    monkeypatch.setenv("NANOHOST_WEB_PORT", "8123")
    assert load_settings().web_port == 8123


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "NANOHOST_OPENAI_API_KEY"])
def test_openai_key_is_read_and_never_shown(
    host_env: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "sk-real-secret")
    settings = load_settings()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-real-secret"
    assert "sk-real-secret" not in repr(settings)
    assert "sk-real-secret" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("NANOHOST_WEB_PORT", "abc", "valid integer"),
        ("NANOHOST_WEB_PORT", "70000", "less than or equal to 65535"),
        ("NANOHOST_CONTAINER_MEMORY", "lots", "not a memory size"),
        ("NANOHOST_CONTAINER_MEMORY", "1m", "minimum of 6m"),
        ("NANOHOST_CONTAINER_MEMORY", "-2g", "not a memory size"),
        ("NANOHOST_CONTAINER_CPUS", "0", "greater than or equal to 0.01"),
        ("NANOHOST_CONTAINER_CPUS", "-1", "greater than or equal to 0.01"),
        ("NANOHOST_CONTAINER_CPUS", "nan", "finite number"),
        ("NANOHOST_CONTAINER_CPUS", "300", "less than or equal to 256"),
        ("NANOHOST_CONTAINER_CPUS", "two", "valid number"),
        ("NANOHOST_CONTAINER_PIDS", "0", "greater than or equal to 16"),
        ("NANOHOST_CONTAINER_PIDS", "-1", "greater than or equal to 16"),
        ("NANOHOST_CONTAINER_PIDS", "100000000", "less than or equal to 65536"),
        ("NANOHOST_TRUSTED_PROXIES", "10.0.0.1,proxy.local", "'proxy.local' is not an IP address"),
        ("NANOHOST_TRUSTED_PROXIES", "[10.0.0.1", "not a JSON list"),
        ("NANOHOST_LOG_LEVEL", "loud", "DEBUG"),
        ("NANOHOST_CODEX_VERSION", "latest", "not a version"),
        ("NANOHOST_IDLE_TIMEOUT", "-5", "greater than 0"),
        ("NANOHOST_MAX_CONTAINERS", "0", "greater than or equal to 1"),
        ("NANOHOST_MODEL_BASE_URL", "ftp://x", "not an http(s) URL"),
        ("NANOHOST_ALLOWED_MOUNTS", '["relative/path"]', "not an absolute path"),
        ("NANOHOST_IMAGE_CA_FILE", "/nonexistent/ca.pem", "not a readable file"),
    ],
)
def test_bad_values_fail_naming_the_variable(
    host_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert expected in message


def test_every_bad_variable_is_reported_at_once(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOHOST_WEB_PORT", "abc")
    monkeypatch.setenv("NANOHOST_SWEEP_INTERVAL", "never")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "NANOHOST_WEB_PORT" in str(caught.value)
    assert "NANOHOST_SWEEP_INTERVAL" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "size"), [("512m", 512 * 1024**2), ("2g", 2 * 1024**3), ("1.5G", 1536 * 1024**2)]
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_ca_file_defaults_to_ssl_cert_file(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = host_env / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert load_settings().image_ca_file == bundle
    monkeypatch.delenv("SSL_CERT_FILE")
    assert load_settings().image_ca_file is None


def test_trusted_proxies_are_none_by_default(host_env: Path) -> None:
    assert load_settings().trusted_proxies == []


@pytest.mark.parametrize(
    "value",
    ["10.0.0.1, 192.168.0.0/16,::1", '["10.0.0.1", "192.168.0.0/16", "::1"]', "10.0.0.1,192.168.7.7/16,::1"],
)
def test_trusted_proxies_take_addresses_and_networks(
    host_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NANOHOST_TRUSTED_PROXIES", value)
    assert load_settings().trusted_proxies == [
        ip_network("10.0.0.1/32"),
        ip_network("192.168.0.0/16"),
        ip_network("::1/128"),
    ]
