"""The regex subset the matcher supports, parsed into a small AST.

Supported: literals, escapes (``\\.``, ``\\d \\w \\s \\D \\W \\S``, ``\\xHH``,
``\\t \\n \\r \\f \\v``), character classes ``[...]`` with ranges and negation,
``.``, ``* + ?``, bounded ``{m}``, ``{m,}``, ``{m,n}``, alternation ``|``, groups
``(...)`` and ``(?:...)``, ``^`` and ``$`` at the start/end of the pattern or of
a top-level alternative, and a leading ``(?i)`` flag.  Lazy quantifiers
(``*?``) are accepted: they do not change *whether* a pattern matches.

Refused with :class:`RegexError` (``unsupported regex feature``): back-references,
lookaround, named groups, other inline flags, possessive quantifiers, anchors
in the middle of a pattern.

Semantics are those of Python's ``re.search`` on bytes with ``re.DOTALL``: the
pattern matches if it matches any substring; ``^``/``$`` pin it to the start/
end of the string (``$`` means the very end, like ``\\Z``).  :func:`to_python`
re-emits the AST as a Python pattern, which is what the reference evaluator
runs, so the DFA construction is checked against an independent engine.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

ALL = frozenset(range(256))
MAX_REPEAT = 255
MAX_NODES = 20000


class RegexError(Exception):
    """A pattern the matcher cannot run; ``pos`` is the offset in the pattern."""

    def __init__(self, msg: str, pos: int, hint: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.pos = pos
        self.hint = hint


# ---- AST -------------------------------------------------------------------


@dataclass(frozen=True)
class Chars:
    """One byte out of a set."""

    set: frozenset[int]


@dataclass(frozen=True)
class Cat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    item: Node
    min: int
    max: int | None  # None: unbounded


Node = Chars | Cat | Alt | Repeat

EMPTY: Node = Cat(())


@dataclass(frozen=True)
class Branch:
    """A top-level alternative with its anchors."""

    bol: bool
    eol: bool
    body: Node


@dataclass(frozen=True)
class Regex:
    source: str
    icase: bool
    branches: tuple[Branch, ...]


def _fold(s: frozenset[int]) -> frozenset[int]:
    out = set(s)
    for b in s:
        if 65 <= b <= 90:
            out.add(b + 32)
        elif 97 <= b <= 122:
            out.add(b - 32)
    return frozenset(out)


def fold_node(n: Node) -> Node:
    """The case-insensitive version of a node (ASCII letters only)."""
    if isinstance(n, Chars):
        return Chars(_fold(n.set))
    if isinstance(n, Cat):
        return Cat(tuple(fold_node(i) for i in n.items))
    if isinstance(n, Alt):
        return Alt(tuple(fold_node(i) for i in n.items))
    return Repeat(fold_node(n.item), n.min, n.max)


DIGIT = frozenset(range(48, 58))
WORD = frozenset([*range(48, 58), *range(65, 91), *range(97, 123), 95])
SPACE = frozenset(b" \t\n\r\f\v")
_SIMPLE_ESC = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11, "a": 7, "0": 0}
_CLASS_ESC = {
    "d": DIGIT,
    "D": ALL - DIGIT,
    "w": WORD,
    "W": ALL - WORD,
    "s": SPACE,
    "S": ALL - SPACE,
}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.nodes = 0

    def peek(self) -> str:
        return self.src[self.i] if self.i < len(self.src) else ""

    def unsupported(self, what: str, pos: int, hint: str = "") -> RegexError:
        return RegexError(f"unsupported regex feature: {what}", pos, hint)

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RegexError(
                f"regex too large (more than {MAX_NODES} positions)",
                self.i,
                "split it into several rules or shorten bounded repetitions",
            )

    # alternation at top level is handled by parse(); nested by alt()
    def alt(self, depth: int) -> Node:
        items = [self.cat(depth)]
        while self.peek() == "|":
            self.i += 1
            items.append(self.cat(depth))
        return items[0] if len(items) == 1 else Alt(tuple(items))

    def cat(self, depth: int) -> Node:
        items: list[Node] = []
        while True:
            c = self.peek()
            if c in ("", "|", ")"):
                break
            if c == "$" and depth == 0 and self.src[self.i + 1 : self.i + 2] in ("", "|"):
                break
            if c == "^" or c == "$":
                raise self.unsupported(
                    f"anchor {c!r} in the middle of a pattern",
                    self.i,
                    "anchors are supported only at the start/end of the pattern "
                    "or of a top-level alternative",
                )
            items.append(self.quantified(depth))
        return items[0] if len(items) == 1 else Cat(tuple(items))

    def quantified(self, depth: int) -> Node:
        atom = self.atom(depth)
        quantified = False
        while True:
            c = self.peek()
            pos = self.i
            if c in ("*", "+", "?"):
                self.i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            elif c == "{" and self._looks_like_bound():
                lo, hi = self.bound()
            else:
                return atom
            if quantified:
                raise RegexError("multiple repeat", pos, "put the repeated part in a group")
            quantified = True
            if self.peek() == "?":  # lazy: same language
                self.i += 1
            elif self.peek() == "+":
                raise self.unsupported("possessive quantifier", self.i)
            atom = Repeat(atom, lo, hi)
            self.count()

    def _looks_like_bound(self) -> bool:
        return re.match(r"\{\d*(,\d*)?\}", self.src[self.i :]) is not None

    def bound(self) -> tuple[int, int | None]:
        pos = self.i
        m = re.match(r"\{(\d*)(,(\d*))?\}", self.src[self.i :])
        assert m
        self.i += m.end()
        lo_s, comma, hi_s = m.group(1), m.group(2), m.group(3)
        if lo_s == "" and (comma is None or hi_s == ""):
            raise RegexError("bad repetition bound", pos)
        lo = int(lo_s) if lo_s else 0
        hi: int | None = lo if comma is None else (int(hi_s) if hi_s else None)
        if hi is not None and hi < lo:
            raise RegexError("bad repetition bound: max is less than min", pos)
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise RegexError(
                f"repetition bound too large (at most {MAX_REPEAT})",
                pos,
                "use a smaller bound or an unbounded repeat like {m,}",
            )
        return lo, hi

    def atom(self, depth: int) -> Node:
        c = self.peek()
        pos = self.i
        self.count()
        if c == "(":
            if depth >= 32:
                raise RegexError("groups nested too deeply (at most 32)", pos)
            self.i += 1
            if self.src.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                rest = self.src[self.i : self.i + 3]
                what = {
                    "?=": "lookahead",
                    "?!": "negative lookahead",
                    "?<": "lookbehind or named group",
                    "?P": "named group",
                    "?#": "comment group",
                    "?(": "conditional group",
                }.get(rest[:2], "inline flags or group options")
                raise self.unsupported(
                    what, pos, "only plain groups (...) and (?:...) are supported"
                )
            inner = self.alt(depth + 1)
            if self.peek() != ")":
                raise RegexError("missing ), unterminated group", pos)
            self.i += 1
            return inner
        if c == ")":
            raise RegexError("unbalanced parenthesis", pos)
        if c in ("*", "+", "?"):
            raise RegexError("nothing to repeat", pos)
        if c == "{" and self._looks_like_bound():
            raise RegexError("nothing to repeat", pos)
        if c == "[":
            return Chars(self.klass())
        if c == ".":
            self.i += 1
            return Chars(ALL)
        if c == "\\":
            return Chars(self.escape(in_class=False))
        self.i += 1
        return Chars(self._char_set(c, pos))

    def _char_set(self, c: str, pos: int) -> frozenset[int]:
        b = c.encode("utf-8")
        if len(b) != 1:
            raise self.unsupported(
                "non-ASCII character", pos, "patterns match bytes; use \\xHH escapes"
            )
        return frozenset([b[0]])

    def escape(self, in_class: bool) -> frozenset[int]:
        pos = self.i
        self.i += 1
        c = self.peek()
        if c == "":
            raise RegexError("bad escape (end of pattern)", pos)
        self.i += 1
        if c in _CLASS_ESC:
            return _CLASS_ESC[c]
        if c in _SIMPLE_ESC and not (c == "0" and self.peek().isdigit()):
            return frozenset([_SIMPLE_ESC[c]])
        if c == "x":
            h = self.src[self.i : self.i + 2]
            if len(h) != 2 or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise RegexError("bad \\x escape: needs two hex digits", pos)
            self.i += 2
            return frozenset([int(h, 16)])
        if c.isdigit():
            raise self.unsupported(
                "back-reference", pos, "a DFA cannot match back-references; rewrite the pattern"
            )
        if c in "bBAZzG" and not in_class:
            raise self.unsupported(
                f"assertion \\{c}", pos, "use ^ and $ at the pattern's start/end instead"
            )
        if c.isalnum():
            raise RegexError(f"bad escape \\{c}", pos)
        return self._char_set(c, pos)

    def klass(self) -> frozenset[int]:
        pos = self.i
        self.i += 1
        neg = False
        if self.peek() == "^":
            neg = True
            self.i += 1
        out: set[int] = set()
        first = True
        while True:
            c = self.peek()
            if c == "":
                raise RegexError("unterminated character class", pos)
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and self.src.startswith("[:", self.i):
                raise self.unsupported(
                    "POSIX class [:name:]", self.i, "use \\d, \\w, \\s or ranges"
                )
            lo_pos = self.i
            lo = self._class_atom()
            if self.peek() == "-" and self.src[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self._class_atom()
                if len(lo) != 1 or len(hi) != 1:
                    raise RegexError("bad character range", lo_pos)
                a, b = next(iter(lo)), next(iter(hi))
                if b < a:
                    raise RegexError("bad character range (reversed)", lo_pos)
                out.update(range(a, b + 1))
            else:
                out.update(lo)
        s = frozenset(out)
        return ALL - s if neg else s

    def _class_atom(self) -> frozenset[int]:
        c = self.peek()
        if c == "\\":
            return self.escape(in_class=True)
        pos = self.i
        self.i += 1
        return self._char_set(c, pos)


@functools.lru_cache(maxsize=65536)
def parse(src: str) -> Regex:
    """Parse ``src``; raise :class:`RegexError` with an offset on failure.
    (Cached: the result is immutable.)"""
    p = _Parser(src)
    icase = False
    if src.startswith("(?i)"):
        icase = True
        p.i = 4
    branches: list[Branch] = []
    while True:
        bol = False
        if p.peek() == "^":
            bol = True
            p.i += 1
        body = p.cat(0)
        eol = False
        if p.peek() == "$":
            eol = True
            p.i += 1
            if p.peek() not in ("", "|"):
                raise p.unsupported(
                    "anchor '$' in the middle of a pattern",
                    p.i - 1,
                    "anchors are supported only at the start/end of the pattern "
                    "or of a top-level alternative",
                )
        if icase:
            body = fold_node(body)
        branches.append(Branch(bol, eol, body))
        c = p.peek()
        if c == "":
            break
        if c == "|":
            p.i += 1
            continue
        if c == ")":
            raise RegexError("unbalanced parenthesis", p.i)
        raise RegexError("unexpected character", p.i)  # pragma: no cover
    return Regex(src, icase, tuple(branches))


# ---- Python re emission (the reference semantics) --------------------------


def _set_to_py(s: frozenset[int]) -> str:
    if s == ALL:
        return "[\\x00-\\xff]"
    if len(s) == 1:
        return f"\\x{next(iter(s)):02x}"
    parts: list[str] = []
    items = sorted(s)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        if j == i:
            parts.append(f"\\x{items[i]:02x}")
        else:
            parts.append(f"\\x{items[i]:02x}-\\x{items[j]:02x}")
        i = j + 1
    return "[" + "".join(parts) + "]" if parts else "[^\\x00-\\xff]"


def _node_to_py(n: Node) -> str:
    if isinstance(n, Chars):
        return _set_to_py(n.set)
    if isinstance(n, Cat):
        return "(?:" + "".join(_node_to_py(i) for i in n.items) + ")"
    if isinstance(n, Alt):
        return "(?:" + "|".join(_node_to_py(i) for i in n.items) + ")"
    hi = "" if n.max is None else str(n.max)
    return "(?:" + _node_to_py(n.item) + f"){{{n.min},{hi}}}"


def to_python(r: Regex) -> re.Pattern[bytes]:
    """The equivalent Python bytes pattern, for ``.search``."""
    parts = []
    for b in r.branches:
        s = ("\\A" if b.bol else "") + _node_to_py(b.body) + ("\\Z" if b.eol else "")
        parts.append("(?:" + s + ")")
    return re.compile("|".join(parts).encode("ascii"), re.DOTALL)


# ---- Globs ------------------------------------------------------------------


def glob_to_regex(glob: str, fold: bool = False, host: bool = False) -> Regex:
    """A glob as an anchored regex: ``*`` = any run without ``/``, ``**`` = any
    run, ``?`` = one byte other than ``/``; everything else is literal.  With
    ``host`` (hosts never contain ``/``) ``*`` and ``?`` match any byte."""
    items: list[Node] = []
    i = 0
    notslash = ALL if host else ALL - {ord("/")}
    data = glob.encode("utf-8")
    while i < len(data):
        c = data[i]
        if c == ord("*"):
            if data[i + 1 : i + 2] == b"*":
                items.append(Repeat(Chars(ALL), 0, None))
                i += 2
                continue
            items.append(Repeat(Chars(notslash), 0, None))
        elif c == ord("?"):
            items.append(Chars(notslash))
        else:
            items.append(Chars(frozenset([c])))
        i += 1
    body: Node = Cat(tuple(items))
    if fold:
        body = fold_node(body)
    return Regex("glob:" + glob, fold, (Branch(True, True, body),))


def glob_as_literal(glob: bytes, host: bool = False) -> tuple[str, bytes] | None:
    """(op, literal) when a glob is just a prefix/suffix/contains/exact test:
    ``**X`` suffix, ``X**`` prefix, ``**X**`` contains (and ``*`` for ``**``
    in host globs).  None otherwise."""
    if b"\0" in glob:
        return None
    g = glob.replace(b"**", b"\0") if not host else glob.replace(b"**", b"*").replace(b"*", b"\0")
    if b"?" in g or b"*" in g:
        return None
    parts = g.split(b"\0")
    if any(p == b"" for p in parts[1:-1]):
        return None  # consecutive wildcards
    if len(parts) == 1:
        return ("exact", parts[0])
    if len(parts) == 2:
        a, b = parts
        if a and b:
            return None
        if not a and not b:
            return ("prefix", b"")  # matches everything
        return ("suffix", b) if not a else ("prefix", a)
    if len(parts) == 3 and not parts[0] and not parts[2]:
        return ("contains", parts[1])
    return None


def literal_regex(lit: bytes, bol: bool, eol: bool) -> Regex:
    body = Cat(tuple(Chars(frozenset([c])) for c in lit))
    return Regex(lit.decode("latin-1"), False, (Branch(bol, eol, body),))
