"""Deterministic automata for the matcher: one DFA per field and kind.

Every automaton is a DFA over *byte classes* (a 256-entry map from byte to
class keeps rows short) whose states carry two output lists of predicate
ids: ``visit`` (emitted whenever the state is entered, the start state
included) and ``end`` (emitted if the input ends in the state).  This lets
one DFA answer prefix/contains-style predicates ("the pattern matched some
prefix of the remaining input" -> visit) and exact/suffix-style ones ("the
pattern matched up to the end" -> end) without the state blow-up that sticky
accepting states would cause.  State 0 is always the dead state (no outputs,
every transition to itself) so the matcher stops early.

Two builders:

* :func:`build_literal_dfa` - prefix (anchored) and suffix/contains
  (unanchored) literals, built directly as the product of a trie with an
  Aho-Corasick automaton.  Linear in the total literal length; this is what
  keeps 10,000 rules compiling in well under the time budget.
* :func:`build_regex_dfa` - regexes, globs, MIME-type and CIDR predicates:
  Thompson NFA of all patterns of the field, subset construction over byte
  classes, with a state bound (:class:`AutomatonTooLarge` past it).

:func:`run` simulates a DFA in Python (for tests and for explanations).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from l7ctl import regex as rx

MAX_NFA_STATES = 200_000


class AutomatonTooLarge(Exception):
    def __init__(self, states: int, limit: int) -> None:
        super().__init__(f"automaton exceeds {limit} states")
        self.states = states
        self.limit = limit


@dataclass
class Dfa:
    classmap: bytes  # 256 entries: byte -> class
    nclasses: int
    start: int
    trans: list[list[int]] = field(default_factory=list)  # [state][class] -> state
    visit: list[tuple[int, ...]] = field(default_factory=list)
    end: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def nstates(self) -> int:
        return len(self.trans)


def run(dfa: Dfa, data: bytes) -> set[int]:
    """The predicate ids a DFA emits for ``data`` (reference simulation)."""
    out: set[int] = set()
    s = dfa.start
    out.update(dfa.visit[s])
    cm = dfa.classmap
    for b in data:
        if s == 0:
            return out
        s = dfa.trans[s][cm[b]]
        out.update(dfa.visit[s])
    out.update(dfa.end[s])
    return out


def _fold_byte(b: int) -> int:
    return b + 32 if 65 <= b <= 90 else b


# ---- literal automaton: trie x Aho-Corasick --------------------------------


def build_literal_dfa(
    prefixes: list[tuple[int, bytes]],
    suffixes: list[tuple[int, bytes]],
    contains: list[tuple[int, bytes]],
    fold: bool = False,
) -> Dfa:
    """DFA for prefix (visit at the literal's end), suffix (end) and contains
    (visit) literals.  With ``fold`` the input is ASCII-lowercased through the
    class map and literals must already be lowercase."""
    used = sorted({b for _, lit in (*prefixes, *suffixes, *contains) for b in lit})
    base = 1 if len(used) < 256 else 0  # class 0 = "any other byte", if any
    cls = {b: i + base for i, b in enumerate(used)}
    nclasses = len(used) + base
    cmap = bytearray(256)
    for b in range(256):
        cmap[b] = cls.get(_fold_byte(b) if fold else b, 0)
    rep = [-1] * base + used  # class -> byte

    # Aho-Corasick over unanchored literals.
    uch: list[dict[int, int]] = [{}]
    uvis: list[set[int]] = [set()]
    uend: list[set[int]] = [set()]
    for lits, outs in ((suffixes, uend), (contains, uvis)):
        for pid, lit in lits:
            n = 0
            for b in lit:
                nxt = uch[n].get(b)
                if nxt is None:
                    nxt = len(uch)
                    uch.append({})
                    uvis.append(set())
                    uend.append(set())
                    uch[n][b] = nxt
                n = nxt
            outs[n].add(pid)
    has_u = bool(suffixes or contains)
    nu = len(uch)
    fail = [0] * nu
    udelta: list[list[int]] = [[0] * nclasses for _ in range(nu)]
    for c in range(base, nclasses):
        udelta[0][c] = uch[0].get(rep[c], 0)
    q: deque[int] = deque()
    for child in uch[0].values():
        q.append(child)
    while q:
        n = q.popleft()
        f = fail[n]
        uvis[n] |= uvis[f]
        uend[n] |= uend[f]
        row = list(udelta[f])
        for b, child in uch[n].items():
            fail[child] = udelta[f][cls[b]] if n != 0 else 0
            row[cls[b]] = child
            q.append(child)
        udelta[n] = row

    # Trie of anchored literals.
    ach: list[dict[int, int]] = [{}]
    avis: list[set[int]] = [set()]
    for pid, lit in prefixes:
        n = 0
        for b in lit:
            nxt = ach[n].get(b)
            if nxt is None:
                nxt = len(ach)
                ach.append({})
                avis.append(set())
                ach[n][b] = nxt
            n = nxt
        avis[n].add(pid)

    # Product.  Pure-U states (the trie is dead) are numbered 1..nu when
    # there are unanchored literals, else they all collapse to dead state 0.
    dfa = Dfa(bytes(cmap), nclasses, 0)
    dfa.trans.append([0] * nclasses)
    dfa.visit.append(())
    dfa.end.append(())
    if has_u:
        for u in range(nu):
            dfa.trans.append([1 + t for t in udelta[u]])
            dfa.visit.append(tuple(sorted(uvis[u])))
            dfa.end.append(tuple(sorted(uend[u])))

    def ustate(u: int) -> int:
        return 1 + u if has_u else 0

    ids: dict[tuple[int, int], int] = {}

    def astate(a: int, u: int) -> int:
        key = (a, u)
        sid = ids.get(key)
        if sid is None:
            sid = len(dfa.trans)
            ids[key] = sid
            dfa.trans.append([])
            dfa.visit.append(tuple(sorted(avis[a] | uvis[u])))
            dfa.end.append(tuple(sorted(uend[u])))
            work.append((a, u, sid))
        return sid

    work: list[tuple[int, int, int]] = []
    dfa.start = astate(0, 0)
    while work:
        a, u, sid = work.pop()
        urow = udelta[u]
        row = [ustate(t) for t in urow]
        for b, child in ach[a].items():
            c = cls[b]
            row[c] = astate(child, urow[c])
        dfa.trans[sid] = row
    return dfa


# ---- regex automaton: Thompson NFA + subset construction ---------------------

VISIT = 0
END = 1


class _Nfa:
    def __init__(self) -> None:
        self.ch: list[list[tuple[frozenset[int], int]]] = []
        self.eps: list[list[int]] = []
        self.final: dict[int, tuple[int, int]] = {}  # state -> (pred, mode)

    def new(self) -> int:
        if len(self.ch) >= MAX_NFA_STATES:
            raise AutomatonTooLarge(len(self.ch), MAX_NFA_STATES)
        self.ch.append([])
        self.eps.append([])
        return len(self.ch) - 1

    def frag(self, n: rx.Node) -> tuple[int, int]:
        if isinstance(n, rx.Chars):
            s, e = self.new(), self.new()
            if n.set:
                self.ch[s].append((n.set, e))
            return s, e
        if isinstance(n, rx.Cat):
            s = e = self.new()
            for item in n.items:
                a, b = self.frag(item)
                self.eps[e].append(a)
                e = b
            return s, e
        if isinstance(n, rx.Alt):
            s, e = self.new(), self.new()
            for item in n.items:
                a, b = self.frag(item)
                self.eps[s].append(a)
                self.eps[b].append(e)
            return s, e
        # Repeat
        s = e = self.new()
        for _ in range(n.min):
            a, b = self.frag(n.item)
            self.eps[e].append(a)
            e = b
        if n.max is None:
            a, b = self.frag(n.item)
            loop = self.new()
            self.eps[e].append(loop)
            self.eps[loop].append(a)
            self.eps[b].append(loop)
            return s, loop
        end = self.new()
        self.eps[e].append(end)
        for _ in range(n.max - n.min):
            a, b = self.frag(n.item)
            self.eps[e].append(a)
            self.eps[b].append(end)
            e = b
        return s, end


def _partition(sets: list[frozenset[int]]) -> list[int]:
    """Byte -> class, coarsest partition that respects every set."""
    blocks: list[frozenset[int]] = [rx.ALL]
    for cs in sets:
        if cs == rx.ALL:
            continue
        nb: list[frozenset[int]] = []
        for bl in blocks:
            i = bl & cs
            if i and i != bl:
                nb.append(i)
                nb.append(bl - i)
            else:
                nb.append(bl)
        blocks = nb
    out = [0] * 256
    for ci, bl in enumerate(blocks):
        for b in bl:
            out[b] = ci
    return out


def build_regex_dfa(
    patterns: list[tuple[int, rx.Regex]], fold: bool = False, max_states: int = 65535
) -> Dfa:
    """One DFA for all ``patterns`` (pred id, regex) of a field, with search
    semantics: unanchored branches may start anywhere, branches without ``$``
    emit on visit, branches with ``$`` at the end."""
    nfa = _Nfa()
    init = nfa.new()
    loop = nfa.new()
    nfa.eps[init].append(loop)
    nfa.ch[loop].append((rx.ALL, loop))
    any_unanchored = False
    for pid, r in patterns:
        for br in r.branches:
            a, b = nfa.frag(br.body)
            if br.bol:
                nfa.eps[init].append(a)
            else:
                nfa.eps[loop].append(a)
                any_unanchored = True
            f = nfa.new()
            nfa.eps[b].append(f)
            nfa.final[f] = (pid, END if br.eol else VISIT)
    if not any_unanchored:
        nfa.ch[loop].clear()

    distinct = {cs for row in nfa.ch for cs, _ in row}
    cmap_list = _partition(sorted(distinct, key=lambda s: (len(s), min(s) if s else -1)))
    if fold:  # the input is lower-cased: an upper-case byte acts as its lower case
        for b in range(65, 91):
            cmap_list[b] = cmap_list[b + 32]
    dense: dict[int, int] = {}
    for b in range(256):
        cmap_list[b] = dense.setdefault(cmap_list[b], len(dense))
    nclasses = len(dense)
    rep = [-1] * nclasses  # a byte standing for its class (never a folded one)
    for b in range(256):
        c = cmap_list[b]
        if rep[c] < 0 and not (fold and 65 <= b <= 90):
            rep[c] = b
    # classes covered by each charset
    cov: dict[frozenset[int], tuple[int, ...]] = {}
    for cs in distinct:
        cov[cs] = tuple(c for c in range(nclasses) if rep[c] in cs)
    chc = [[(cov[cs], t) for cs, t in row] for row in nfa.ch]

    closure_cache: dict[frozenset[int], frozenset[int]] = {}

    def closure(states: frozenset[int]) -> frozenset[int]:
        got = closure_cache.get(states)
        if got is not None:
            return got
        seen = set(states)
        stack = list(states)
        while stack:
            s = stack.pop()
            for t in nfa.eps[s]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        # keep only states that matter: with char transitions or final
        res = frozenset(s for s in seen if nfa.ch[s] or s in nfa.final)
        closure_cache[states] = res
        return res

    dfa = Dfa(bytes(cmap_list), nclasses, 0)
    dead: frozenset[int] = frozenset()
    ids: dict[frozenset[int], int] = {dead: 0}
    dfa.trans.append([0] * nclasses)
    dfa.visit.append(())
    dfa.end.append(())
    work: list[frozenset[int]] = []

    def sid(S: frozenset[int]) -> int:
        i = ids.get(S)
        if i is None:
            i = len(dfa.trans)
            if i > max_states:
                raise AutomatonTooLarge(i, max_states)
            ids[S] = i
            dfa.trans.append([])
            vis = sorted(
                {nfa.final[s][0] for s in S if s in nfa.final and nfa.final[s][1] == VISIT}
            )
            end = sorted({nfa.final[s][0] for s in S if s in nfa.final and nfa.final[s][1] == END})
            dfa.visit.append(tuple(vis))
            dfa.end.append(tuple(end))
            work.append(S)
        return i

    dfa.start = sid(closure(frozenset([init])))
    while work:
        S = work.pop()
        moves: dict[int, set[int]] = {}
        for s in S:
            for cids, t in chc[s]:
                for c in cids:
                    m = moves.get(c)
                    if m is None:
                        moves[c] = {t}
                    else:
                        m.add(t)
        row = [0] * nclasses
        for c, ts in moves.items():
            row[c] = sid(closure(frozenset(ts)))
        dfa.trans[ids[S]] = row
    return dfa
