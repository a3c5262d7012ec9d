"""YAML for user configs: safe loading with a bound on alias expansion.

``yaml.safe_load`` runs no code, but it does expand aliases: ten lines of
``&a [*b, *b, ...]`` anchors (a "billion laughs" document) make a value of
10^9 nodes that passes validation of a free-form option (e.g.
``loss.kwargs``) and exhausts memory once something serialises it. Configs
are small, so :func:`load_yaml` composes the node graph first, counts the
nodes it would expand to (linear time: each node's size is computed once)
and refuses documents past ``max_nodes``, naming the file.
"""

from __future__ import annotations

from typing import Any

import yaml

from audiocl.errors import InputError

__all__ = ["MAX_YAML_NODES", "load_yaml"]

# far above any real config (a large recipe config has a few hundred nodes)
MAX_YAML_NODES = 100_000


class _Recursive(Exception):
    pass


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    key = id(node)
    if key in memo:
        if memo[key] < 0:  # still being counted: the alias points into itself
            raise _Recursive
        return memo[key]
    memo[key] = -1
    size = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, limit) + _expanded_size(v, memo, limit)
            if size > limit:
                break
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            size += _expanded_size(v, memo, limit)
            if size > limit:
                break
    memo[key] = size
    return size


def load_yaml(text: str, source: str, *, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Parse one YAML document safely; :class:`InputError` naming ``source`` on
    invalid YAML, on nesting too deep to parse, or when aliases expand past
    ``max_nodes`` nodes."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, max_nodes)
        except _Recursive:
            raise InputError(source, "a YAML alias refers to its own anchor (a recursive value)") from None
        if size > max_nodes:
            raise InputError(
                source,
                f"YAML aliases/anchors expand to more than {max_nodes} values (an alias bomb?); "
                "write the values out instead of repeating aliases",
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(source, f"invalid YAML: {getattr(err, 'problem', None) or err}", line=line) from None
    except RecursionError:
        raise InputError(source, "YAML nested too deeply to read") from None
    finally:
        loader.dispose()
