"""YAML a user hands lmtune (run configs, `--set` values), read with limits: one line per problem.

PyYAML's safe loader already refuses tags that build Python objects; on top of it this loader
refuses what a config never needs and a hostile or careless file can do to a process:
- a key given twice in one mapping (PyYAML silently keeps the last);
- nesting deeper than MAX_DEPTH (PyYAML's composer recurses: 100k levels end in RecursionError);
- an alias bomb: anchors nest copies of copies, so a 1 KB file expands to billions of nodes that
  validation and error messages then walk (MAX_NODES counts the expanded document);
- a self-referencing anchor (`a: &x [*x]`), which no validator can walk;
- a file over MAX_BYTES (a config is a few KB; /dev/zero is not a config).
"""

from __future__ import annotations

from typing import Any

import yaml

from lmtune.errors import LmtuneError

MAX_BYTES = 256 << 10  # PyYAML reads ~100 KB/s: a bigger file would take seconds to refuse
MAX_DEPTH = 32
MAX_NODES = 100_000


class _Problem(yaml.YAMLError):
    """A limit broken while loading, with the line it was found on."""

    def __init__(self, problem: str, mark):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Problem(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):  # `!!map x`: PyYAML's own check names it
            return super().construct_mapping(node, deep)
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML's own check names it
                break
            if duplicate:
                raise _Problem(f"key {str(key)[:80]!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any) -> int:
    """Nodes in the document with every alias expanded, counted without expanding anything (each shared
    object once, memoised by identity; iterative, so a long chain of aliases cannot overflow the stack)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(value, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, dict | list):
            continue
        ident = id(node)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        if children_done:
            open_.discard(ident)
            total = 1 + sum(sizes.get(id(c), 1) if isinstance(c, dict | list) else 1 for c in children)
            sizes[ident] = total
            if total > MAX_NODES:
                return total
            continue
        if ident in sizes:
            continue
        if ident in open_:
            raise LmtuneError("refers to itself through an alias (a recursive anchor)")
        open_.add(ident)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, dict | list) and id(c) not in sizes)
    return sizes.get(id(value), 1)


def loads(text: str, where: str, *, lines: bool = True) -> Any:
    """The YAML document in `text`; any problem is one LmtuneError naming `where` (and the line, for
    a file)."""
    if len(text) > MAX_BYTES:
        raise LmtuneError(f"{where}: more than {MAX_BYTES >> 10} KB; a run config is a few KB")
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark is not None and lines else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LmtuneError(f"{at}: not valid YAML ({problem})") from None
    except RecursionError:  # a flow collection deep enough for the parser itself
        raise LmtuneError(f"{where}: not valid YAML (nested more than {MAX_DEPTH} levels deep)") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # PyYAML's constructors on a value its tag cannot hold (`!!int 0.5`, `!!bool maybe`, an integer
        # of more than 4,300 digits) raise these, not a YAMLError
        problem = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise LmtuneError(
            f"{where}: not valid YAML (a value its tag or type cannot hold: {problem})"
        ) from None
    try:
        size = _expanded_size(value)
    except LmtuneError as exc:
        raise LmtuneError(f"{where}: {exc}") from None
    if size > MAX_NODES:
        raise LmtuneError(
            f"{where}: expands to more than {MAX_NODES:,} values through its aliases (&anchor / *alias); "
            "a run config holds a few hundred"
        )
    return value
