"""Names the PostgreSQL backend's modules share: the notification channel, the handler's savepoint."""

from __future__ import annotations

from datetime import datetime, timezone

#: The one LISTEN/NOTIFY channel of every queue.
CHANNEL = "neoq"

#: The savepoint taken before each handler; a failure rolls back to it.
_SAVEPOINT = "SAVEPOINT neoq_handler"
_ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT neoq_handler"


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(timezone.utc)
