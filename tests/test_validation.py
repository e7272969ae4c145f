"""Names that become folders and URL parts: path tricks are refused with a clear reason."""

from __future__ import annotations

import pytest

from nanohost.validation import InvalidInput, check_env_name, check_folder, check_name


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
    "name", ["OPENAI_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "MY_SECRET", "aws_credentials"]
)
def test_credential_like_env_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="credential"):
        check_env_name(name)


@pytest.mark.parametrize("name", ["TZ", "LANG", "MY_SETTING", "_private"])
def test_plain_env_names_pass(name: str) -> None:
    assert check_env_name(name) == name
