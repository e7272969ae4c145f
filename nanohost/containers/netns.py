"""Spare network namespaces: a cold start joins one made ahead of need instead of making its own.

For ``network_mode="none"`` Docker makes the container's network namespace during its start, in a
prestart hook that re-executes the whole ``dockerd`` binary: about 100 ms of the ~240 ms a start
took on the engine this was measured on (bench/NOTES.md). Joining the namespace of a container that
already runs (``network_mode="container:<name>"``) skips that hook. So the backend keeps a few
*spares*: tiny containers started with no network (loopback only), locked down like an agent's,
that only sleep, made while no wake waits for them. A start claims one and its agent container
joins it.

The guarantee stays the one ``"none"`` gives: a claimed namespace belongs to one agent container
for that container's life and is removed after it; it is never handed to a second container, so
no two groups or sessions ever share a loopback, and it holds no interface but loopback. The
spare also carries the agent's hostname and its ``/etc/hosts`` line (a joined container cannot set
its own).

Each spare is a running container: its containerd shim, ``docker-init`` and ``sleep`` hold about
3 MB of memory of their own (PSS ~5.5 MB; RSS 16 MB, mostly the shim's shared pages);
``NANOHOST_SPARE_NETNS`` sets how many are kept (0: every start makes its own namespace, as before).

Bookkeeping is by container name, under one lock, so that ``reap`` (run by the sweeper) can never
remove a sandbox between its claim and its agent's start: names the process has made or handed out
and not yet seen joined are ``_held``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LABEL_NETNS = "nanohost.netns"
"""On a sandbox: marks it as one; its value is ``owner_of(data_dir)``, so that two hosts on copies
of one data dir (which share an installation id) never take or remove each other's."""
LABEL_JOINED = "nanohost.netns.joined"
"""On an agent container: the name of the sandbox whose namespace it joined."""
SANDBOX_MEMORY = 16 * 1024**2
SANDBOX_PIDS = 4
LIVE = frozenset({"created", "running", "restarting", "paused"})
"""States of an agent container that still needs its namespace (``created``: about to start)."""
QUIET = 0.3
"""Seconds without a claim before spares are made: a start's first ~0.3 s are CPU-bound (the
runner's imports, Codex's start), and making a namespace is the engine's costliest step, so
refilling waits for a burst of starts to pass instead of competing with it."""


ALIVE = frozenset({"created", "running"})
"""States a listed spare may be in and still be fine (``created``: listed between its create and
its start)."""


def remove_quietly(api: Any, name: str) -> None:
    """Remove a container that must go, if it is there (by name or id). A failure is logged, not
    raised: the sweep's reap removes what is left."""
    from docker.errors import APIError, NotFound

    try:
        api.remove_container(name, force=True)
    except NotFound:
        pass
    except APIError as exc:  # 409: being removed already (the sweep's reap and a stop at once)
        if exc.status_code != 409:
            log.warning("could not remove container %s: %s", name, exc)
    except Exception as exc:  # the engine away
        log.warning("could not remove container %s: %s", name, exc)


def owner_of(data_dir: Path) -> str:
    """The value of ``LABEL_NETNS`` on the spares of the host on ``data_dir``."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


class NetworkSandboxes:
    """Spare network-less namespaces of one installation, kept ready for agent containers.

    ``client`` returns the docker SDK client (made lazily by the backend). ``hostname`` and
    ``extra_hosts`` are what an agent container would have set itself.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        *,
        installation: str,
        owner: str,
        spares: int,
        hostname: str,
        extra_hosts: dict[str, str],
        labels: dict[str, str],
    ) -> None:
        self._client = client
        self.installation = installation
        self.owner = owner
        self.spares = spares
        """How many to keep ready; 0: none are made, but ``reap`` still sweeps up old ones."""
        self._hostname = hostname
        self._extra_hosts = extra_hosts
        self._labels = {**labels, LABEL_NETNS: owner}
        self._lock = threading.Lock()
        self._ready: deque[str] = deque()
        self._held: set[str] = set()
        """Names made or being made, ready, or claimed and not yet released by their claimer."""
        self._image: str | None = None
        self._last_claim = 0.0
        self._wake = threading.Condition(self._lock)
        self._filler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanohost-netns")
        self._closed = False

    # -- the wake's side -------------------------------------------------------------------

    def claim(self, image: str) -> str | None:
        """A ready sandbox's name for one agent container, or None (none ready: the caller starts
        its container with ``network_mode="none"``). Refilling starts in the background."""
        with self._lock:
            self._image = image
            self._last_claim = time.monotonic()
            name = self._ready.popleft() if self._ready else None
        self.refill_soon()
        return name

    def joined(self, name: str) -> None:
        """The claimer's agent container exists now (labelled with ``name``): ``reap`` judges the
        sandbox by that container from here on."""
        with self._lock:
            self._held.discard(name)

    def remove(self, name: str) -> None:
        """Remove a sandbox (its agent has ended, or joining it failed)."""
        try:
            remove_quietly(self._client().api, name)
        finally:
            with self._lock:  # no longer held either way, so the reap may judge it
                self._held.discard(name)

    # -- keeping spares ready --------------------------------------------------------------

    def refill_soon(self) -> None:
        """Make spares up to ``spares``, in the background (one at a time)."""
        with self._lock:  # never a submit after ``close`` shut the filler down
            if self.spares and not self._closed:
                self._filler.submit(self._refill)

    def _refill(self) -> None:
        while not self._closed:
            with self._lock:
                while (wait := self._last_claim + QUIET - time.monotonic()) > 0 and not self._closed:
                    self._wake.wait(wait)
                image = self._image
                if self._closed or image is None or len(self._ready) >= self.spares:
                    return
                name = f"nanohost-{self.installation}-netns-{secrets.token_hex(4)}"
                self._held.add(name)
            try:
                self._make(name, image)
            except Exception as exc:  # the engine away, the image gone: a start makes its own
                log.warning("could not make a spare network namespace: %s", exc)
                with self._lock:  # _make removed what it created; a name it never got is not ours
                    self._held.discard(name)
                return
            with self._lock:
                self._ready.append(name)
                self._wake.notify_all()

    def wait_ready(self, timeout: float) -> bool:
        """Whether all ``spares`` are ready within ``timeout`` seconds (for tests and the bench:
        they wait on this instead of sleeping)."""
        with self._lock:
            return self._wake.wait_for(lambda: len(self._ready) >= self.spares, timeout)

    def _make(self, name: str, image: str) -> None:
        api = self._client().api
        host_config = api.create_host_config(
            network_mode="none",
            extra_hosts=self._extra_hosts,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            read_only=True,
            mem_limit=SANDBOX_MEMORY,
            memswap_limit=SANDBOX_MEMORY,
            nano_cpus=100_000_000,
            pids_limit=SANDBOX_PIDS,
            log_config={"type": "none", "config": {}},
        )
        created = api.create_container(
            image,
            name=name,
            entrypoint=["sleep", "infinity"],
            user="65534:65534",
            labels=self._labels,
            hostname=self._hostname,
            host_config=host_config,
            detach=True,
        )
        try:
            api.start(created["Id"])
        except Exception:
            with contextlib.suppress(Exception):  # by id: only what this call created
                api.remove_container(created["Id"], force=True)
            raise

    # -- housekeeping ----------------------------------------------------------------------

    def reap(self) -> int:
        """Remove this installation's sandboxes that no live agent container uses and that this
        process does not hold (ended agents', and a previous host's spares); refill. Returns how
        many were removed. The order matters: the sandboxes are listed before the held names are
        read, and the agents after, so a sandbox claimed meanwhile is held or seen joined."""
        api = self._client().api  # listings, not per-container inspects: none can vanish midway
        mine = f"nanohost.installation={self.installation}"
        listed = {
            str(c["Names"][0]).lstrip("/"): c.get("State")
            for c in api.containers(all=True, filters={"label": [mine, f"{LABEL_NETNS}={self.owner}"]})
            if c.get("Names")
        }
        sandboxes = list(listed)
        with self._lock:
            dead = [name for name in self._ready if listed.get(name, "running") not in ALIVE]
            for name in dead:  # the engine restarted, say: a claim must not find these
                self._ready.remove(name)
                self._held.discard(name)
            held = set(self._held)
        agents = api.containers(all=True, filters={"label": [mine, LABEL_JOINED]})
        in_use = {(c.get("Labels") or {}).get(LABEL_JOINED) for c in agents if c.get("State") in LIVE}
        removed = 0
        for name in sandboxes:
            if name not in held and name not in in_use:
                self.remove(name)
                removed += 1
        self.refill_soon()
        return removed

    def close(self) -> None:
        """Remove the spares not handed out (claimed ones stay with their running agents, which the
        next host adopts)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._filler.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            ready = list(self._ready)
            self._ready.clear()
        for name in ready:
            self.remove(name)
