"""Tagging schemes of token-classification data (IOB1, IOB2, BIOES): checking a tag, bringing a sentence's
tags to IOB2, repairing stray I- tags, and finding its entities with seqeval's default-mode chunker.

Data-layer code (the token reader checks and converts tags with it); lmtune.evaluate.spans scores the
entities it finds. Torch-free and numpy-free.
"""

from __future__ import annotations

from lmtune.errors import LmtuneError

# ---------------------------------------------------------------------------------- tagging schemes

_SCHEMES = {"IOB1": "IOB1", "IOB2": "IOB2", "BIOES": "BIOES", "IOBES": "BIOES"}
_PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


def _scheme(scheme: str) -> str:
    try:
        return _SCHEMES[scheme.upper()]
    except (KeyError, AttributeError):
        raise LmtuneError(f"unknown tagging scheme {scheme!r} (known: IOB1, IOB2, BIOES, IOBES)") from None


def check_tag(tag: str, scheme: str = "IOB2") -> str | None:
    """None when `tag` is valid in `scheme` (O, or PREFIX-TYPE with an allowed prefix), else why not.

    seqeval never rejects a tag (it reads "PER" as prefix "P", type "ER"), so data should pass this
    before it is scored.
    """
    name = _scheme(scheme)
    if not isinstance(tag, str):
        return f"tag {tag!r} is not a string"
    if tag == "O":
        return None
    prefixes = _PREFIXES[name]
    prefix, dash, type_ = tag.partition("-")
    if dash and prefix in prefixes:
        return None if type_ else f"tag {tag!r} has no entity type after {prefix}-"
    allowed = ", ".join(f"{p}-" for p in prefixes)
    return f"tag {tag!r} is not {scheme.upper()} (allowed prefixes: {allowed}, or O)"


class TagError(LmtuneError):
    """A tag the scheme does not allow, at token `index` of its sentence (`reason` says why)."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"token {index}: {reason}")
        self.index, self.reason = index, reason


def _checked(tags: list[str], scheme: str) -> list[tuple[str, str]]:
    """(prefix, type) of each tag ("O", "") for O; raises TagError on the first tag the scheme does not
    allow."""
    out = []
    for i, tag in enumerate(tags):
        reason = check_tag(tag, scheme)
        if reason:
            raise TagError(i, reason)
        prefix, _, type_ = tag.partition("-")
        out.append((prefix, type_))
    return out


def repair_iob2(tags: list[str]) -> tuple[list[str], int]:
    """IOB2 tags with every I-X that does not continue an X chunk (at the start of the sentence, after
    O, or after a chunk of another type) made B-X, and how many were changed.

    The policy "an I- after O is repaired": the stray I- is read as the start of a new chunk, as
    seqeval's default mode (and conlleval) read it, so repairing changes no score; it makes the tags
    valid for strict IOB2 consumers (seqeval's strict mode, models trained on IOB2) and the count
    says how much of a dataset was off-scheme.
    """
    out, changed, prev_type = [], 0, None
    for prefix, type_ in _checked(tags, "IOB2"):
        if prefix == "I" and type_ != prev_type:
            prefix, changed = "B", changed + 1
        out.append("O" if prefix == "O" else f"{prefix}-{type_}")
        prev_type = None if prefix == "O" else type_
    return out, changed


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """`tags` in IOB2 (every chunk starts with B-), so datasets in different schemes can be mixed.

    IOB1 and BIOES: a tag is B-X where seqeval's default mode starts a chunk (B-, S-, an I-/E- after O,
    E-, S- or another type), else I-X, so the entities are unchanged even in off-scheme input (a plain
    S->B, E->I rename would merge "S-X I-X" into one chunk and leave "O E-X" as a stray I-). For valid
    BIOES that is S-X -> B-X, E-X -> I-X; for IOB1, its I-X that starts a chunk becomes B-X. IOB2 tags
    are returned as they are (use repair_iob2 for stray I- tags).
    """
    name = _scheme(scheme)
    parsed = _checked(tags, name)
    if name == "IOB2":
        return list(tags)
    out, prev = [], ("O", "")
    for cur in parsed:
        out.append("O" if cur[0] == "O" else f"{'B' if _starts(prev, cur) else 'I'}-{cur[1]}")
        prev = cur
    return out


# ---------------------------------------------------------------------------------- entities

# seqeval's default-mode chunker, restated. It reads any tag as prefix = its first character and
# type = what follows the first "-" after it (the whole rest when there is none; "_" when empty), so
# "B-PER" is (B, PER), "O" is (O, _) and "PER" is (P, ER). A chunk boundary depends on the previous
# and the current tag only:
#   a chunk ends before the current tag when the previous is E or S; or the previous is B/I and the
#     current is B, S or O; or the previous is anything but O or "." and the types differ;
#   a chunk starts at the current tag when it is B or S; or it is I/E after E, S or O; or it is
#     anything but O or "." and the types differ.
# Any other prefix letter (a typo, a bare "PER") continues whatever is open, like I.
_ENDS_ALWAYS_AFTER = {"E", "S"}
_ENDS_INSIDE_BEFORE = {"B", "S", "O"}  # after B or I
_STARTS_ALWAYS = {"B", "S"}
_STARTS_AFTER_OUTSIDE = {"E", "S", "O"}  # for I or E
_TYPELESS = {"O", "."}


def _read(tag: str) -> tuple[str, str]:
    """seqeval's (prefix, type) reading of a tag."""
    if not tag:
        raise LmtuneError("an empty tag (every token needs a tag, O outside entities)")
    rest = tag[1:]
    return tag[0], (rest.split("-", 1)[1] if "-" in rest else rest) or "_"


def _ends(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (p, pt), (c, ct) = prev, cur
    return (
        p in _ENDS_ALWAYS_AFTER
        or (p in ("B", "I") and c in _ENDS_INSIDE_BEFORE)
        or (p not in _TYPELESS and pt != ct)
    )


def _starts(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (p, pt), (c, ct) = prev, cur
    return (
        c in _STARTS_ALWAYS
        or (c in ("I", "E") and p in _STARTS_AFTER_OUTSIDE)
        or (c not in _TYPELESS and pt != ct)
    )


def entities(tags: list[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """(type, start, end exclusive) of every chunk in one sentence, as seqeval's default mode finds them.

    The same lenient chunker reads IOB1, IOB2 and BIOES correctly (an I- after O or after another type
    starts a chunk, B- and S- always start one, E- and S- end one), so `scheme` is only checked for a
    known name; tags are not validated (see check_tag): malformed ones are chunked as seqeval would.
    """
    _scheme(scheme)
    chunks: list[tuple[str, int, int]] = []
    prev, begin = ("O", ""), 0  # before the sentence: O with no type, as seqeval starts
    for i, cur in enumerate([*map(_read, tags), ("O", "_")]):  # the O after the end closes a last chunk
        if _ends(prev, cur):
            chunks.append((prev[1], begin, i))
        if _starts(prev, cur):
            begin = i
        prev = cur
    return chunks
