"""Django's on-commit hook list (``connection.run_on_commit``: ``[(savepoint ids, callable, robust)]``).

The notification outbox keeps one outbox per savepoint of a transaction: a notification joins the outbox that the
latest hook holds if that hook was registered in the current savepoint, so order is kept and a savepoint that rolls
back drops its own notifications with its hooks. Django has no public way to ask for the latest hook.
"""
from operatorapi.compat import require

require("Django", "5.2")


def current_hook(connection, kind: type):
    """The latest on-commit callable of the current savepoint if it is a ``kind``, else None."""
    hooks = connection.run_on_commit
    if hooks and isinstance(hooks[-1][1], kind) and hooks[-1][0] == set(connection.savepoint_ids):
        return hooks[-1][1]
    return None
