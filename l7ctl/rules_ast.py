"""Parse .rules text into an AST whose every node knows its source position.

The parser is lark (LALR, contextual lexer) over ``rules_grammar.lark``.
Syntax errors become :class:`SyntaxProblem` with file, line, column, the
offending text and a hint listing what was expected.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args


@dataclass(frozen=True)
class Pos:
    file: str
    line: int
    col: int
    end_col: int = 0  # exclusive, on the same line; 0 = one character

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def shifted(self, offset: int, length: int = 1) -> Pos:
        """A position ``offset`` characters into this one."""
        return Pos(self.file, self.line, self.col + offset, self.col + offset + max(length, 1))


@dataclass(frozen=True)
class Val:
    """A token: its text (unquoted for strings) and where it was written."""

    text: str
    pos: Pos
    quoted: bool = False
    # for quoted strings: source column offset of each text index (escapes)
    colmap: tuple[int, ...] = ()

    def pos_at(self, index: int, length: int = 1) -> Pos:
        """Position of character ``index`` of the (unescaped) text."""
        if not self.quoted:
            return self.pos.shifted(index, length)
        off = self.colmap[index] if index < len(self.colmap) else len(self.text) + 1
        return self.pos.shifted(off, length)


@dataclass(frozen=True)
class ListRef:
    name: Val


Values = tuple[Val, ...] | ListRef


@dataclass(frozen=True)
class Pred:
    field: Val  # host path method type source header cookie query
    name: Val | None  # header/cookie/query name
    op: Val | None
    values: Values | None
    pos: Pos


@dataclass(frozen=True)
class Not:
    item: Cond
    pos: Pos


@dataclass(frozen=True)
class And:
    items: tuple[Cond, ...]
    pos: Pos


@dataclass(frozen=True)
class Or:
    items: tuple[Cond, ...]
    pos: Pos


Cond = Pred | Not | And | Or


@dataclass(frozen=True)
class Rule:
    action: str  # route block redirect answer
    target: Val  # pool name or status
    location: Val | None  # redirect: the location; answer: the body
    cond: Cond | None
    pos: Pos
    text: str  # the rule as written (first line)


@dataclass(frozen=True)
class Option:
    kind: str  # limit timeout x-forwarded-for x-forwarded-proto relay log
    name: Val  # log: the mode
    value: Val  # log sample: N; else as name
    pos: Pos


@dataclass(frozen=True)
class Server:
    endpoint: Val
    weight: Val | None
    state: Val | None
    pos: Pos
    id: Val | None = None


@dataclass(frozen=True)
class CheckDecl:
    """`check KIND ["REQUEST"] [NAME VALUE]...;` in a pool."""

    kind: Val
    request: Val | None
    options: tuple[tuple[Val, Val], ...]
    pos: Pos


@dataclass(frozen=True)
class PersistDecl:
    """`persist KIND [VALUE];` in a pool."""

    kind: Val
    value: Val | None
    pos: Pos


@dataclass(frozen=True)
class Setting:
    kind: str  # scheduler forward persistence
    value: Val
    pos: Pos


@dataclass
class PoolDecl:
    name: Val
    settings: list[Setting]
    servers: list[Server]
    pos: Pos
    checks: list[CheckDecl] = field(default_factory=list)
    persists: list[PersistDecl] = field(default_factory=list)


@dataclass
class ServiceDecl:
    name: Val
    listen: Val
    rules: list[Rule]
    options: list[Option]
    pos: Pos
    tls: Pos | None = None  # where `tls` follows the listen address
    certificates: list[CertDecl] = field(default_factory=list)


@dataclass(frozen=True)
class CertDecl:
    """`certificate "FILE" key "FILE";` in a TLS service."""

    cert: Val
    key: Val
    pos: Pos


@dataclass
class VirtualDecl:
    proto: Val
    endpoint: Val
    settings: list[Setting]
    servers: list[Server]
    pos: Pos


@dataclass
class ListDecl:
    name: Val
    items: list[Val]
    pos: Pos


@dataclass
class Include:
    path: Val
    pos: Pos


# An Option at file level is a namespace-wide `limit`.
Item = PoolDecl | ServiceDecl | VirtualDecl | ListDecl | Include | Option


@dataclass
class File:
    path: str
    text: str
    items: list[Item] = field(default_factory=list)


class SyntaxProblem(Exception):
    def __init__(self, pos: Pos, msg: str, text: str, hint: str) -> None:
        super().__init__(msg)
        self.pos = pos
        self.msg = msg
        self.text = text
        self.hint = hint


def _unquote(raw: str) -> tuple[str, tuple[int, ...]]:
    body = raw[1:-1]
    out: list[str] = []
    cols: list[int] = []
    i = 0
    while i < len(body):
        if body[i] == "\\" and body[i + 1 : i + 2] == '"':
            out.append('"')
            cols.append(i + 1)
            i += 2
            continue
        out.append(body[i])
        cols.append(i + 1)
        i += 1
    return "".join(out), tuple(cols)


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("l7ctl").joinpath("rules_grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


_TOKEN_NAMES = {
    "NAME": "a name",
    "INT": "a number",
    "DURATION": "a duration like 30s",
    "STRING": 'a quoted string "..."',
    "ENDPOINT": "an address:port",
    "BARE": "a value",
    "SEMICOLON": "';'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "AT": "'@'",
    "SFIELD": "host or path",
    "NFIELD": "header, cookie or query",
    "BFIELD": "method, type or source",
    "CVAL": "a value like 2s or 200-399",
    "OP": "an operator (exact prefix suffix contains glob regex)",
    "EXISTS": "'exists'",
}


def _describe(expected: set[str], p: Lark) -> str:
    names = []
    for t in sorted(expected):
        if t in _TOKEN_NAMES:
            names.append(_TOKEN_NAMES[t])
            continue
        try:
            pat = p.get_terminal(t).pattern
            names.append(repr(pat.value) if pat.type == "str" else t)
        except KeyError:
            names.append(t)
    return ", ".join(sorted(set(names)))


def parse_text(text: str, path: str) -> File:
    p = _parser()
    try:
        tree = p.parse(text)
    except lark.exceptions.UnexpectedCharacters as e:
        pos = Pos(path, e.line, e.column, e.column + 1)
        at = e.pos_in_stream or 0
        ch = text[at] if at < len(text) else ""
        hint = "expected " + _describe(set(e.allowed or ()), p) if e.allowed else ""
        if ch == '"':
            hint = "unterminated string? strings end on the same line"
        raise SyntaxProblem(pos, f"unexpected character {ch!r}", ch, hint) from None
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            lines = text.split("\n")
            pos = Pos(path, len(lines), len(lines[-1]) + 1)
            raise SyntaxProblem(
                pos,
                "unexpected end of file",
                "",
                "expected " + _describe(set(e.expected), p) + " (missing '}' or ';'?)",
            ) from None
        line = tok.line or 1
        col = tok.column or 1
        pos = Pos(path, line, col, col + len(str(tok)))
        hint = "expected " + _describe(set(e.expected), p)
        if "SEMICOLON" in e.expected and len(e.expected) <= 4:
            hint += "; missing ';' at the end of the previous statement?"
        raise SyntaxProblem(pos, f"unexpected {str(tok)!r}", str(tok), hint) from None
    return _Builder(path, text).build(tree)


class _Builder(Transformer[Token, Any]):
    def __init__(self, path: str, text: str) -> None:
        super().__init__()
        self.path = path
        self.lines = text.split("\n")
        self.text = text

    def build(self, tree: lark.Tree[Token]) -> File:
        items = self.transform(tree)
        return File(self.path, self.text, list(items))

    def _pos(self, meta: Any) -> Pos:
        line = getattr(meta, "line", 1)
        col = getattr(meta, "column", 1)
        return Pos(self.path, line, col, getattr(meta, "end_column", col + 1))

    def _val(self, tok: Token) -> Val:
        pos = Pos(self.path, tok.line or 1, tok.column or 1, (tok.column or 1) + len(str(tok)))
        s = str(tok)
        if tok.type == "STRING":
            text, cols = _unquote(s)
            return Val(text, pos, True, cols)
        return Val(s, pos)

    def __default_token__(self, tok: Token) -> Any:
        return tok

    @v_args(inline=True)
    def listref(self, name: Token) -> ListRef:
        return ListRef(self._val(name))

    def svalues(self, items: list[Any]) -> Values:
        if len(items) == 1 and isinstance(items[0], ListRef):
            return items[0]
        return tuple(self._val(t) for t in items)

    bvalues = svalues

    @v_args(meta=True)
    def spred(self, meta: Any, ch: list[Any]) -> Pred:
        f = self._val(ch[0])
        op = self._val(ch[1]) if len(ch) == 3 else None
        return Pred(f, None, op, ch[-1], self._pos(meta))

    @v_args(meta=True)
    def npred(self, meta: Any, ch: list[Any]) -> Pred:
        f = self._val(ch[0])
        name = self._val(ch[1])
        op: Val | None = None
        vals: Values | None = None
        for c in ch[2:]:
            if isinstance(c, Token):
                op = self._val(c)
            else:
                vals = c
        return Pred(f, name, op, vals, self._pos(meta))

    @v_args(meta=True)
    def bpred(self, meta: Any, ch: list[Any]) -> Pred:
        return Pred(self._val(ch[0]), None, None, ch[1], self._pos(meta))

    @v_args(meta=True)
    def neg(self, meta: Any, ch: list[Any]) -> Not:
        return Not(ch[0], self._pos(meta))

    @v_args(meta=True)
    def and_c(self, meta: Any, ch: list[Any]) -> And:
        return And(tuple(ch), self._pos(meta))

    @v_args(meta=True)
    def or_c(self, meta: Any, ch: list[Any]) -> Or:
        return Or(tuple(ch), self._pos(meta))

    def _rule(self, meta: Any, action: str, ch: list[Any]) -> Rule:
        pos = self._pos(meta)
        target = self._val(ch[0])
        two = action in ("redirect", "answer")
        loc = self._val(ch[1]) if two else None
        rest = ch[2:] if two else ch[1:]
        cond = rest[0] if rest else None
        return Rule(action, target, loc, cond, pos, self._snippet(meta))

    def _snippet(self, meta: Any) -> str:
        line = self.lines[meta.line - 1]
        if meta.end_line == meta.line:
            return str(line[meta.column - 1 : meta.end_column - 1]).strip()
        return str(line[meta.column - 1 :]).strip() + " ..."

    @v_args(meta=True)
    def route(self, meta: Any, ch: list[Any]) -> Rule:
        return self._rule(meta, "route", ch)

    @v_args(meta=True)
    def block(self, meta: Any, ch: list[Any]) -> Rule:
        return self._rule(meta, "block", ch)

    @v_args(meta=True)
    def redirect(self, meta: Any, ch: list[Any]) -> Rule:
        return self._rule(meta, "redirect", ch)

    @v_args(meta=True)
    def answer(self, meta: Any, ch: list[Any]) -> Rule:
        return self._rule(meta, "answer", ch)

    @v_args(meta=True)
    def log(self, meta: Any, ch: list[Any]) -> Option:
        mode = self._val(ch[0])
        return Option("log", mode, self._val(ch[1]) if len(ch) > 1 else mode, self._pos(meta))

    @v_args(meta=True)
    def check(self, meta: Any, ch: list[Any]) -> CheckDecl:
        kind = self._val(ch[0])
        rest = ch[1:]
        request = None
        if rest and isinstance(rest[0], Token):
            request = self._val(rest[0])
            rest = rest[1:]
        return CheckDecl(kind, request, tuple(rest), self._pos(meta))

    def copt(self, ch: list[Any]) -> tuple[Val, Val]:
        return (self._val(ch[0]), self._val(ch[1]))

    @v_args(meta=True)
    def persist(self, meta: Any, ch: list[Any]) -> PersistDecl:
        value = self._val(ch[1]) if len(ch) > 1 else None
        return PersistDecl(self._val(ch[0]), value, self._pos(meta))

    @v_args(meta=True)
    def limit(self, meta: Any, ch: list[Any]) -> Option:
        return Option("limit", self._val(ch[0]), self._val(ch[1]), self._pos(meta))

    @v_args(meta=True)
    def timeout(self, meta: Any, ch: list[Any]) -> Option:
        return Option("timeout", self._val(ch[0]), self._val(ch[1]), self._pos(meta))

    @v_args(meta=True)
    def xff(self, meta: Any, ch: list[Any]) -> Option:
        v = self._val(ch[0])
        return Option("x-forwarded-for", v, v, self._pos(meta))

    @v_args(meta=True)
    def xfp(self, meta: Any, ch: list[Any]) -> Option:
        v = self._val(ch[0])
        return Option("x-forwarded-proto", v, v, self._pos(meta))

    @v_args(meta=True)
    def tls(self, meta: Any, ch: list[Any]) -> Pos:
        return self._pos(meta)

    @v_args(meta=True)
    def certificate(self, meta: Any, ch: list[Any]) -> CertDecl:
        return CertDecl(self._val(ch[0]), self._val(ch[1]), self._pos(meta))

    @v_args(meta=True)
    def relay(self, meta: Any, ch: list[Any]) -> Option:
        v = self._val(ch[0])
        return Option("relay", v, v, self._pos(meta))

    @v_args(meta=True)
    def scheduler(self, meta: Any, ch: list[Any]) -> Setting:
        return Setting("scheduler", self._val(ch[0]), self._pos(meta))

    @v_args(meta=True)
    def forward(self, meta: Any, ch: list[Any]) -> Setting:
        return Setting("forward", self._val(ch[0]), self._pos(meta))

    @v_args(meta=True)
    def persistence(self, meta: Any, ch: list[Any]) -> Setting:
        return Setting("persistence", self._val(ch[0]), self._pos(meta))

    def weight(self, ch: list[Any]) -> tuple[str, Val]:
        return ("weight", self._val(ch[0]))

    def state(self, ch: list[Any]) -> tuple[str, Val]:
        return ("state", self._val(ch[0]))

    def sid(self, ch: list[Any]) -> tuple[str, Val]:
        return ("id", self._val(ch[0]))

    @v_args(meta=True)
    def server(self, meta: Any, ch: list[Any]) -> Server:
        opts: dict[str, Val] = {}
        for k, v in ch[1:]:
            opts[k] = v
        return Server(
            self._val(ch[0]), opts.get("weight"), opts.get("state"), self._pos(meta), opts.get("id")
        )

    @v_args(meta=True)
    def pool(self, meta: Any, ch: list[Any]) -> PoolDecl:
        settings = [c for c in ch[1:] if isinstance(c, Setting)]
        servers = [c for c in ch[1:] if isinstance(c, Server)]
        checks = [c for c in ch[1:] if isinstance(c, CheckDecl)]
        persists = [c for c in ch[1:] if isinstance(c, PersistDecl)]
        return PoolDecl(self._val(ch[0]), settings, servers, self._pos(meta), checks, persists)

    @v_args(meta=True)
    def service(self, meta: Any, ch: list[Any]) -> ServiceDecl:
        rules = [c for c in ch[2:] if isinstance(c, Rule)]
        opts = [c for c in ch[2:] if isinstance(c, Option)]
        certs = [c for c in ch[2:] if isinstance(c, CertDecl)]
        tls = next((c for c in ch[2:] if isinstance(c, Pos)), None)
        return ServiceDecl(
            self._val(ch[0]), self._val(ch[1]), rules, opts, self._pos(meta), tls, certs
        )

    @v_args(meta=True)
    def virtual(self, meta: Any, ch: list[Any]) -> VirtualDecl:
        settings = [c for c in ch[2:] if isinstance(c, Setting)]
        servers = [c for c in ch[2:] if isinstance(c, Server)]
        return VirtualDecl(self._val(ch[0]), self._val(ch[1]), settings, servers, self._pos(meta))

    @v_args(meta=True)
    def listdef(self, meta: Any, ch: list[Any]) -> ListDecl:
        return ListDecl(self._val(ch[0]), [self._val(t) for t in ch[1:]], self._pos(meta))

    @v_args(meta=True)
    def include(self, meta: Any, ch: list[Any]) -> Include:
        return Include(self._val(ch[0]), self._pos(meta))

    def start(self, ch: list[Any]) -> list[Any]:
        return ch
