"""This host's installation id: which containers on a shared engine are its own.

Several hosts may share one container engine (two data dirs, or the test suite on a machine that
also serves). Each data dir's database holds one id, made with the database (migration 0006; made
again here if the row is somehow missing). Every container the host starts carries it in its
label ``nanohost.installation`` and in its name (``nanohost-<id>-<folder>-s<session>``), and the
host lists, adopts, stops and replaces only containers that carry its own id.
"""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from nanohost.db.models import Installation


def new_id() -> str:
    """12 hex digits: short enough for a container name, unique enough for one engine."""
    return secrets.token_hex(6)


def installation_id(db: Session) -> str:
    """The id of the installation whose database ``db`` is (made now if missing)."""
    row = db.get(Installation, 1)
    if row is None:
        row = Installation(id=1, installation_id=new_id())
        db.add(row)
        db.flush()
    return row.installation_id


def container_name(installation: str, folder: str, session_id: int) -> str:
    """The name of a session's container (``nanohost-<id>-<folder>-s<session>``)."""
    prefix = f"nanohost-{installation}-" if installation else "nanohost-"
    return f"{prefix}{folder}-s{session_id}"
