"""State machines as data: each model names its allowed transitions in one table, and one function applies them."""


class InvalidTransition(Exception):
    def __init__(self, kind: str, current: str, target: str):
        super().__init__(f"{kind} cannot go from {current!r} to {target!r}")
        self.current, self.target = current, target


def check_transition(table: dict[str, frozenset[str]], kind: str, current: str, target: str) -> None:
    if target not in table.get(current, frozenset()):
        raise InvalidTransition(kind, current, target)


def move(obj, target: str, *, table: dict[str, frozenset[str]], field: str = "status") -> str:
    """Set ``obj.<field>`` to ``target`` if the table allows it; returns the previous state (caller saves)."""
    current = getattr(obj, field)
    check_transition(table, type(obj).__name__.lower(), current, target)
    setattr(obj, field, target)
    return current
