"""Who belongs to a pair: exactly two nodes and one witness (node and file share majority).

Three votes make a quorum of two; a third node would break that arithmetic, so it is refused
when the pair is configured, not discovered later.
"""

from __future__ import annotations

from collections.abc import Sequence


class PairConfigError(ValueError):
    """The pair's configuration is not two distinct nodes plus a witness."""


def check_members(node_names: Sequence[str], witness: str | None) -> None:
    if len(node_names) > 2:
        raise PairConfigError(
            f"a pair has exactly two nodes and a witness; {len(node_names)} nodes are configured "
            f"({', '.join(node_names)}): remove {', '.join(node_names[2:])}"
        )
    if len(set(node_names)) != len(node_names):
        raise PairConfigError(f"node names must differ: {', '.join(node_names)}")
    if not witness:
        raise PairConfigError("a pair needs a witness path (a directory on a third machine's share)")
