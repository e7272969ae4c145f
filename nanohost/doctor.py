"""`nanohost doctor`: each thing the host needs, checked, with the fix when it is missing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from nanohost.settings import Settings


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


def _docker(settings: Settings) -> list[Check]:
    import docker

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # Checked first: docker-py leaks a socket when its constructor cannot connect.
        return _no_docker(FileNotFoundError(f"no socket at {host.removeprefix('unix://')}"))
    try:
        client = docker.from_env(timeout=5)
    except Exception as exc:
        return _no_docker(exc)
    try:
        try:
            version = client.version().get("Version", "?")
        except Exception as exc:
            return _no_docker(exc)
        return [Check("docker engine", True, f"Docker {version}"), _image(settings, client)]
    finally:
        client.close()


def _no_docker(exc: Exception) -> list[Check]:
    return [
        Check(
            "docker engine",
            False,
            f"not reachable ({exc}); start dockerd (scripts/start-dockerd.sh) or set DOCKER_HOST",
        ),
        Check("agent image", False, "needs the Docker engine first"),
    ]


def _image(settings: Settings, client: Any) -> Check:
    """The image the host would run (its tag carries the content hash of this code), and whether
    an image built from older code is all there is, or still runs in a container."""
    from nanohost.containers.image import image_status, older_tags

    tag = settings.image_tag
    try:
        state = image_status(client, tag)
        older = older_tags(client, settings.image_name, tag)
        running = {
            str(c.attrs.get("Config", {}).get("Image", ""))
            for c in client.containers.list(filters={"label": "nanohost.group"})
        }
    except Exception as exc:
        return Check("agent image", False, f"could not inspect {tag}: {exc}")
    if not state.present:
        if older:
            return Check(
                "agent image",
                False,
                f"{older[0]} is older than this code (container/, Codex {settings.codex_version}), "
                f"which wants {tag}; run `nanohost image build`, then restart `nanohost serve`",
            )
        return Check("agent image", False, f"{tag} missing; run `nanohost image build` (a few minutes)")
    stale = sorted(image for image in running if image.startswith(f"{settings.image_name}:") and image != tag)
    if stale:
        return Check(
            "agent image",
            False,
            f"{tag} is built, but running containers still use {', '.join(stale)} (older code); "
            "restart `nanohost serve` if it started before the build, and they switch at their next wake",
        )
    return Check("agent image", True, f"{tag} (Codex {state.codex_version}, built from this code)")


def _data_dir(settings: Settings) -> Check:
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as exc:
        return Check(
            "data dir",
            False,
            f"{path} is not writable ({exc.strerror}); fix its permissions or set NANOHOST_DATA_DIR",
        )
    return Check("data dir", True, str(path))


def _database(settings: Settings) -> Check:
    from nanohost.db import engine as db_engine
    from nanohost.db import migrate

    engine = db_engine.make_engine(settings.db_url)
    try:
        current = migrate.current_revision(engine)
    except Exception as exc:
        return Check("database", False, f"cannot open {settings.db_url}: {exc}")
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current is None:
        return Check("database", False, "empty; run `nanohost setup`")
    if current != head:
        return Check("database", False, f"at {current}, code wants {head}; run `nanohost db upgrade`")
    return Check("database", True, f"at head ({head})")


def _providers() -> Check:
    """The registered providers (entry points), each loaded as a wake would load it."""
    from nanohost.providers import registry
    from nanohost.validation import InvalidInput

    if not registry.names():
        return Check("providers", False, "none registered; reinstall nanohost (`pip install -e .`)")
    shown, broken = [], []
    for name in registry.names():
        try:
            shown.append(f"{name} ({registry.get(name).summary})")
        except InvalidInput as exc:
            broken.append(str(exc))
    if broken:
        return Check("providers", False, "; ".join(broken))
    return Check("providers", True, "; ".join(shown))


def _credentials(settings: Settings) -> Check:
    from nanohost.auth.refresher import describe  # the ChatGPT sign-in (nanohost/auth/)
    from nanohost.auth.store import TokenStore

    sign_in = describe(TokenStore.for_settings(settings))
    if sign_in["state"] not in ("ok", "not signed in"):
        problem = sign_in.get("problem")
        return Check("model credential", False, f"ChatGPT sign-in {sign_in['state']}: {problem}")
    if settings.openai_api_key is None and sign_in["state"] == "ok":
        return Check(
            "model credential", True, "ChatGPT sign-in ok (groups with --auth chatgpt); no OPENAI_API_KEY"
        )
    if settings.openai_api_key is None:
        from nanohost.providers import registry

        keyless = [n for n in registry.names() if _keyless(n)]
        return Check(
            "model credential",
            False,
            "no OPENAI_API_KEY; only groups whose provider needs no model can answer ("
            + (", ".join(keyless) or "none")
            + "); set it in the environment or .env",
        )
    return Check("model credential", True, f"OPENAI_API_KEY set; upstream {settings.model_base_url}")


def _keyless(name: str) -> bool:
    from nanohost.providers import registry
    from nanohost.validation import InvalidInput

    try:
        return not registry.uses_model(name)
    except InvalidInput:
        return False


def _api_token(settings: Settings) -> Check:
    if settings.api_token is None:
        return Check("api token", False, "NANOHOST_API_TOKEN is not set; the HTTP API refuses every call")
    return Check("api token", True, "set")


def _running_host(settings: Settings) -> Check:
    """What the running host says of itself (its /healthz): its own view, not this shell's
    environment. No host answering is fine; it is said so."""
    import json
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
    url = f"http://{host}:{settings.web_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (our own address)
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: it answers, and says what is wrong
        try:
            body = json.loads(exc.read())
        except ValueError:
            return Check("running host", False, f"{url} answered {exc.code}")
    except (OSError, ValueError) as exc:
        return Check("running host", True, f"none answering at {url} ({exc}); fine unless it should run")
    problems = [f"{key}: {value}" for key, value in body.items() if isinstance(value, str) and value != "ok"]
    if body.get("quarantined"):
        problems.append(f"{len(body['quarantined'])} quarantined session(s); see `nanohost status`")
    queue = body.get("wake_queue") or {}
    shown = f"; wake queue {queue.get('waiting', 0)} waiting" if queue else ""
    if body.get("ok") and not problems:
        return Check("running host", True, f"{url}: database, containers and disk ok{shown}")
    return Check("running host", False, f"{url}: " + "; ".join(problems or ["not ok"]) + shown)


def run_checks(settings: Settings) -> list[Check]:
    """All checks, cheapest first; none of them changes anything but a probe file."""
    return [
        _data_dir(settings),
        _database(settings),
        *_docker(settings),
        _providers(),
        _credentials(settings),
        _api_token(settings),
        _running_host(settings),
    ]
