"""An image older than the code is noticed: `image build --if-missing` rebuilds it, and `doctor`
says so until then. Runs the CLI in-process against the real engine under an image name of its
own, so it never touches the tags other tests run."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanohost.cli import app
from nanohost.containers.image import HASH_LABEL
from nanohost.settings import Settings

pytestmark = pytest.mark.docker
NAME = "nanohost-upgrade-test"


@pytest.fixture
def own_image_name(
    host_env: Path, monkeypatch: pytest.MonkeyPatch, docker_client: Any, agent_image: str
) -> Iterator[str]:
    """NANOHOST_IMAGE_NAME of this test; every tag of it is removed afterwards."""
    monkeypatch.setenv("NANOHOST_IMAGE_NAME", NAME)
    monkeypatch.setenv("COLUMNS", "200")

    def clean() -> None:
        for image in docker_client.images.list(name=NAME):
            for tag in image.tags:  # all the image's tags: debian:bookworm-slim's too, which stays
                if tag.startswith(f"{NAME}:"):
                    docker_client.images.remove(tag, force=True, noprune=True)  # untags, deletes nothing

    clean()
    yield Settings().image_tag
    clean()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def image_check(output: str) -> dict[str, Any]:
    (check,) = [c for c in json.loads(output) if c["name"] == "agent image"]
    return dict(check)


def test_an_image_from_older_code_is_rebuilt_and_doctor_says_so(
    own_image_name: str, docker_client: Any
) -> None:
    tag = own_image_name
    version = Settings().codex_version
    base = docker_client.images.get("debian:bookworm-slim")  # stands in for an image of older code
    base.tag(NAME, f"{version}-000000000000")

    code, output = run("doctor", "--json")
    check = image_check(output)
    assert code == 1 and check["ok"] is False
    assert f"{NAME}:{version}-000000000000 is older than this code" in check["detail"]
    assert f"wants {tag}" in check["detail"] and "nanohost image build" in check["detail"]

    base.tag(*tag.split(":"))  # the right tag, but not built from this code (no content hash)
    code, output = run("image", "build", "--if-missing")
    assert code == 0, output
    assert f"{tag} was built from other code; building it again" in output
    steps = re.findall(r"^\[(\d+)/(\d+)\] (.*)$", output, re.MULTILINE)  # one line per step, no raw log
    assert steps and steps[0][0] == "1" and steps[-1][0] == steps[-1][1]
    assert "Successfully built" not in output and "---> " not in output
    labels = docker_client.images.get(tag).attrs["Config"]["Labels"]
    assert labels[HASH_LABEL] == tag.rsplit("-", 1)[1]

    code, output = run("image", "build", "--if-missing")
    assert (code, output.strip()) == (0, f"{tag} is present, built from this code (Codex {version})")
    code, output = run("doctor", "--json")
    check = image_check(output)
    assert check["ok"] is True and "built from this code" in check["detail"], check
