"""Names that become folders and URL parts, and a group's container env: refused with a clear reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanohost.db.models import ContainerConfig
from nanohost.providers import GroupSpec
from nanohost.validation import (
    MAX_ENV_NAME,
    MAX_ENV_VALUE,
    InvalidInput,
    check_env,
    check_env_name,
    check_env_value,
    check_folder,
    check_name,
)


@pytest.mark.parametrize("name", ["main", "team-a", "Ops_2", "a.b", "x" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name
    assert check_folder(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must not be empty"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (".hidden", "start with a dot"),
        ("x" * 65, "longer than 64"),
        ("sp ace", "may only use"),
        ("-dash", "may only use"),
        ("caf\u00e9", "may only use"),
        ("nul\x00", "may only use"),
    ],
)
def test_bad_names(name: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        check_folder(name)


def test_templates_folder_is_reserved() -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        check_folder("templates")


@pytest.mark.parametrize(
    "name",
    [
        "APIKEY",
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "MY_SECRET",
        "DB_PASSWORD",
        "AUTHORIZATION",
        "aws_credentials",
        "api_key",
        "ACCESSTOKEN",
        "DB_PASS",
        "DB_PASSWD",
        "GH_PAT",
        "HTTP_AUTH",
        "SSH_AUTH_SOCK",
        "NPM_CONFIG__AUTH",
        "SESSION_COOKIE",
        "JSESSIONID",
        "AWS_SESSION_TOKEN",
        "GPG_PASSPHRASE",
    ],
)
def test_credential_like_env_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="looks like a credential"):
        check_env_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "ld_preload",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "NODE_PATH",
        "BASH_ENV",
        "ENV",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "GCONV_PATH",
        "HOME",
        "PATH",
        "CODEX_HOME",
        "HTTP_PROXY",
        "https_proxy",
        "No_Proxy",
        "ALL_PROXY",
        "NANOHOST_SESSION_DIR",
        "OPENAI_BASE_URL",
    ],
)
def test_loader_runtime_and_host_env_names_are_reserved(name: str) -> None:
    with pytest.raises(InvalidInput, match="is reserved"):
        check_env_name(name)


@pytest.mark.parametrize(
    "name", ["", "1BAD", "A-B", "A B", "A=B", "\u00c4B", "A\x00", "X" * (MAX_ENV_NAME + 1)]
)
def test_env_names_that_are_not_shell_identifiers_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="env name"):
        check_env_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "TZ",
        "LANG",
        "MY_SETTING",
        "_private",
        "MONKEY",
        "HOCKEY",
        "KEYBOARD_LAYOUT",
        "TOKENIZERS_PARALLELISM",
        "GIT_AUTHOR_NAME",
        "SESSION_NAME",
        "PASSENGER_COUNT",
        "X" * MAX_ENV_NAME,
    ],
)
def test_plain_env_names_pass(name: str) -> None:
    assert check_env_name(name) == name


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("a\x00b", "NUL byte"),
        ("one\ntwo", "single line"),
        ("one\rtwo", "single line"),
        ("x" * (MAX_ENV_VALUE + 1), f"longer than {MAX_ENV_VALUE}"),
        (True, "must be a string"),
        (None, "must be a string"),
        (["a"], "must be a string"),
    ],
)
def test_bad_env_values_are_refused(value: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=f"value of MODE .*{says}"):
        check_env_value("MODE", value)


def test_env_values_up_to_the_limit_pass_and_numbers_become_text() -> None:
    assert check_env_value("MODE", "x" * MAX_ENV_VALUE) == "x" * MAX_ENV_VALUE
    assert check_env({"WORKERS": 4, "RATIO": 0.5, "TZ": "UTC"}) == {
        "WORKERS": "4",
        "RATIO": "0.5",
        "TZ": "UTC",
    }


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"TZ": "UTC", "LD_PRELOAD": "/tmp/x.so"}, "'LD_PRELOAD' is reserved"),
        ({"TZ": "UTC", "APIKEY": "sk-x"}, "'APIKEY' looks like a credential"),
        ({"TZ": "a\x00"}, "NUL byte"),
        (["TZ=UTC"], "mapping of NAME to value"),
    ],
)
def test_a_stored_env_row_is_checked_whole(env: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        check_env(env)


def test_a_wake_snapshot_refuses_a_row_written_by_other_means(tmp_path: Path) -> None:
    """The runtime snapshots the row into a GroupSpec at every wake: a bad env stops the wake there."""
    with pytest.raises(InvalidInput, match="'LD_PRELOAD' is reserved"):
        GroupSpec(
            name="team", folder="team", folder_path=tmp_path, provider="mock", env={"LD_PRELOAD": "/x.so"}
        )
    spec = GroupSpec(name="team", folder="team", folder_path=tmp_path, provider="mock", env={"TZ": "UTC"})
    assert spec.env == {"TZ": "UTC"}


GOOD_ROW_VALUES = {"env": {"TZ": "UTC"}, "memory_limit": "2g", "cpu_limit": 1.5, "pids_limit": 128}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("env", {"GITHUB_TOKEN": "x"}, "looks like a credential"),
        ("env", {"PYTHONPATH": "/x"}, "is reserved"),
        ("memory_limit", "lots", "not a memory size"),
        ("cpu_limit", 0.0, "--cpus 0 must be between"),
        ("pids_limit", -1, "--pids -1 must be between"),
        ("pids_limit", 0, "--pids 0 must be between"),
    ],
)
def test_the_config_row_refuses_what_the_cli_refuses(field: str, value: object, says: str) -> None:
    """Whatever writes the row through the ORM (not only the CLI) meets the same rule."""
    config = ContainerConfig()
    with pytest.raises(InvalidInput, match=says):
        setattr(config, field, value)
    assert getattr(config, field) is None  # nothing was set
    setattr(config, field, GOOD_ROW_VALUES[field])
    assert getattr(config, field) == GOOD_ROW_VALUES[field]
