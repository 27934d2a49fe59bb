"""What a failed savepoint means for the rest of the transaction."""

from django.db import connection


def transaction_broken() -> bool:
    """After a savepoint failed: whether the transaction itself is gone (the connection was closed
    or terminated, so the savepoint could not even be rolled back). Then nothing after it can
    succeed and no subscription or draft is to blame: the run fails instead of retrying each one
    and reporting every rolled-back one as failed (D16)."""
    if connection.needs_rollback or connection.closed_in_transaction:
        return True
    raw = connection.connection
    return raw is None or bool(getattr(raw, "closed", False))
