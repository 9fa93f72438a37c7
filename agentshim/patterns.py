"""Linear-time regular expressions for policy ``re:`` patterns.

The agent controls the command line a policy regex runs on, so a backtracking engine (Python's
``re``) lets one call pin agentshimd (``(a|a)*$`` on ``aaaa…b``). This module parses a
restricted, ``re``-compatible language into a Thompson NFA and runs it as a lazily built DFA:
time is O(len(text) * len(program)) in the worst case and one dict lookup per character once
the states are cached. There is no backtracking, so no input can make it slow.

Supported (with Python ``re`` meaning, no MULTILINE/DOTALL): literals; ``.``; classes
``[a-z_]``, ``[^…]``; ``\\d \\D \\w \\W \\s \\S``; ``\\b \\B \\A \\Z ^ $``; ``? * + {n} {n,}
{,m} {n,m}`` (and their lazy forms, which match the same texts); ``|``; groups ``(…)``,
``(?:…)``, ``(?P<name>…)``; a leading ``(?i)``; escapes ``\\t \\n \\r \\f \\v \\xHH`` and
escaped punctuation. Anything else (backreferences, lookaround, atomic groups, possessive
repeats, conditionals, other flags) is refused with :class:`PatternError` naming it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Final

__all__ = ["MAX_PROGRAM", "MAX_REPEAT", "Pattern", "PatternError", "compile_pattern"]

MAX_REPEAT: Final = 255      # largest count in {n,m}
MAX_PROGRAM: Final = 2000    # NFA instructions after expanding counted repeats
MAX_DEPTH: Final = 100       # group nesting
_CACHE_STATES: Final = 4096  # DFA cache entries kept before it is cleared

_ENGINE_NOTE: Final = "policy regexes run in a linear-time engine"


class PatternError(ValueError):
    """A pattern outside the supported language, or malformed; the message names why."""


# --------------------------------------------------------------------------- character sets


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


_CLASS_TESTS: Final = {
    "d": str.isdecimal,
    "w": _is_word,
    "s": str.isspace,
}


@dataclass(frozen=True)
class CharSet:
    """A set of characters: ranges of code points and \\d/\\w/\\s classes, maybe negated."""

    ranges: tuple[tuple[int, int], ...] = ()
    classes: tuple[tuple[str, bool], ...] = ()  # (letter, negated)
    negated: bool = False
    icase: bool = False

    def _raw(self, c: str) -> bool:
        o = ord(c)
        if any(lo <= o <= hi for lo, hi in self.ranges):
            return True
        return any(_CLASS_TESTS[k](c) != neg for k, neg in self.classes)

    def matches(self, c: str) -> bool:
        """True when c is in the set."""
        hit = self._raw(c)
        if not hit and self.icase:
            hit = self._raw(c.lower()[:1] or c) or self._raw(c.upper()[:1] or c)
        return hit != self.negated


_DOT: Final = CharSet(ranges=((10, 10),), negated=True)


# --------------------------------------------------------------------------- syntax tree

# Nodes: ("set", CharSet) | ("assert", kind) | ("cat", [nodes]) | ("alt", [nodes])
#        | ("rep", node, low, high or None) | ("empty",)
Node = tuple


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.icase = False

    def fail(self, message: str) -> PatternError:
        return PatternError(f"{message} at position {self.i}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def parse(self) -> Node:
        if self.text.startswith("(?i)"):
            self.icase = True
            self.i = 4
        node = self.alternation(0)
        if self.i < len(self.text):
            raise self.fail("unbalanced parenthesis ')'")
        return node

    def alternation(self, depth: int) -> Node:
        branches = [self.sequence(depth)]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence(depth))
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self, depth: int) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.repeat(depth))
        if not items:
            return ("empty",)
        return items[0] if len(items) == 1 else ("cat", items)

    def repeat(self, depth: int) -> Node:
        start = self.i
        atom = self.atom(depth)
        quantified = False
        while True:
            bounds = self.quantifier()
            if bounds is None:
                return atom
            if quantified:
                self.i = start
                raise self.fail("multiple repeat")
            if atom[0] == "assert":
                self.i = start
                raise self.fail("nothing to repeat")
            if self.peek() == "?":
                self.i += 1  # lazy: the same texts match
            elif self.peek() == "+":
                raise self.fail(f"possessive repeat is not supported ({_ENGINE_NOTE})")
            atom = ("rep", atom, bounds[0], bounds[1])
            quantified = True

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c and c in "*+?":
            self.i += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if c != "{":
            return None
        end = self.text.find("}", self.i)
        if end < 0:
            return None
        body = self.text[self.i + 1:end]
        low_s, comma, high_s = body.partition(",")
        if not (low_s.isdigit() or low_s == "") or not (high_s.isdigit() or high_s == ""):
            return None
        if not low_s.isascii() or not high_s.isascii() or (not comma and not low_s):
            return None
        low = int(low_s) if low_s else 0
        high: int | None = (int(high_s) if high_s else None) if comma else low
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise self.fail(f"repeat count larger than {MAX_REPEAT}")
        if high is not None and high < low:
            raise self.fail("min repeat greater than max repeat")
        self.i = end + 1
        return low, high

    def atom(self, depth: int) -> Node:
        c = self.peek()
        if c == "(":
            return self.group(depth)
        if c in "*+?" or (c == "{" and self.quantifier() is not None):
            raise self.fail("nothing to repeat")
        self.i += 1
        if c == ".":
            return ("set", self.charset(_DOT))
        if c == "^":
            return ("assert", "start")
        if c == "$":
            return ("assert", "end")
        if c == "[":
            return ("set", self.char_class())
        if c == "\\":
            return self.escape()
        return ("set", self.charset(CharSet(ranges=((ord(c), ord(c)),))))

    def charset(self, cs: CharSet) -> CharSet:
        if self.icase and not cs.icase:
            return CharSet(cs.ranges, cs.classes, cs.negated, icase=True)
        return cs

    def group(self, depth: int) -> Node:
        if depth >= MAX_DEPTH:
            raise self.fail(f"groups nested deeper than {MAX_DEPTH}")
        open_at = self.i
        self.i += 1
        if self.peek() == "?":
            self.group_kind()
        node = self.alternation(depth + 1)
        if self.peek() != ")":
            self.i = open_at
            raise self.fail("missing ), unterminated subpattern")
        self.i += 1
        return node

    def group_kind(self) -> None:
        """Consume what follows ``(?`` for the accepted kinds, refuse the others by name."""
        rest = self.text[self.i + 1:]
        if rest.startswith(":"):
            self.i += 2
            return
        if rest.startswith(("P<", "<")) and not rest.startswith(("<=", "<!")):
            skip = 2 if rest.startswith("P<") else 1
            end = rest.find(">")
            name = rest[skip:end] if end > 0 else ""
            if not name.isidentifier():
                raise self.fail("bad group name")
            self.i += 1 + end + 1
            return
        names = (
            ("=", "lookahead (?=...)"), ("!", "negative lookahead (?!...)"),
            ("<=", "lookbehind (?<=...)"), ("<!", "negative lookbehind (?<!...)"),
            ("P=", "backreference (?P=name)"), (">", "atomic group (?>...)"),
            ("(", "conditional (?(...)...)"), ("#", "comment group (?#...)"),
        )
        for prefix, what in names:
            if rest.startswith(prefix):
                raise self.fail(f"{what} is not supported ({_ENGINE_NOTE})")
        flag = "(?" + rest[:rest.find(")") + 1] if ")" in rest else "(?"
        raise self.fail(f"inline flag or group {flag} is not supported "
                        "(only (?i) at the very start)")

    def escape(self) -> Node:
        c = self.peek()
        if not c:
            raise self.fail("bad escape (end of pattern)")
        self.i += 1
        asserts = {"b": "word", "B": "nonword", "A": "text_start", "Z": "text_end"}
        if c in asserts:
            return ("assert", asserts[c])
        return ("set", self.charset(self.escape_set(c, in_class=False)))

    def escape_set(self, c: str, in_class: bool) -> CharSet:
        """The set for the escape ``\\c`` (already consumed)."""
        at = self.i - 2  # the backslash, for messages
        if c.lower() in _CLASS_TESTS:
            return CharSet(classes=((c.lower(), c.isupper()),))
        simple = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
        if c in simple:
            o = ord(simple[c])
            return CharSet(ranges=((o, o),))
        if c == "b" and in_class:
            return CharSet(ranges=((8, 8),))
        if c == "x":
            digits = self.text[self.i:self.i + 2]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                self.i = at
                raise self.fail("incomplete escape \\x")
            self.i += 2
            o = int(digits, 16)
            return CharSet(ranges=((o, o),))
        if c.isdigit():
            self.i = at
            raise self.fail(f"backreference or octal escape \\{c} is not supported "
                            f"({_ENGINE_NOTE})")
        if c.isascii() and c.isalnum():
            self.i = at
            raise self.fail(f"escape \\{c} is not supported")
        return CharSet(ranges=((ord(c), ord(c)),))

    def char_class(self) -> CharSet:
        open_at = self.i - 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        classes: list[tuple[str, bool]] = []
        first = True
        while True:
            c = self.peek()
            if not c:
                self.i = open_at
                raise self.fail("unterminated character set")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            lo = self.class_item()
            if lo.classes or len(lo.ranges) != 1 or lo.ranges[0][0] != lo.ranges[0][1]:
                if self.peek() == "-" and self.peek(1) not in ("]", ""):
                    raise self.fail("bad character range")
                ranges.extend(lo.ranges)
                classes.extend(lo.classes)
                continue
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self.class_item()
                if hi.classes or hi.ranges[0][0] != hi.ranges[0][1]:
                    raise self.fail("bad character range")
                a, b = lo.ranges[0][0], hi.ranges[0][0]
                if b < a:
                    raise self.fail("bad character range")
                ranges.append((a, b))
            else:
                ranges.extend(lo.ranges)
        return self.charset(CharSet(tuple(ranges), tuple(classes), negated))

    def class_item(self) -> CharSet:
        c = self.peek()
        self.i += 1
        if c != "\\":
            return CharSet(ranges=((ord(c), ord(c)),))
        e = self.peek()
        if not e:
            raise self.fail("bad escape (end of pattern)")
        self.i += 1
        return self.escape_set(e, in_class=True)


# --------------------------------------------------------------------------- NFA program

# Instructions: ("set", CharSet) consumes one char; ("split", a, b); ("jmp", a);
# ("assert", kind); ("match",).


class _Compiler:
    def __init__(self) -> None:
        self.prog: list[list[object]] = []

    def emit(self, *ins: object) -> int:
        if len(self.prog) >= MAX_PROGRAM:
            raise PatternError(f"pattern too large (more than {MAX_PROGRAM} states after "
                               "expanding counted repeats)")
        self.prog.append(list(ins))
        return len(self.prog) - 1

    def node(self, n: Node) -> None:
        kind = n[0]
        if kind == "set":
            self.emit("set", n[1])
        elif kind == "assert":
            self.emit("assert", n[1])
        elif kind == "cat":
            for sub in n[1]:
                self.node(sub)
        elif kind == "alt":
            jumps = []
            branches = n[1]
            for sub in branches[:-1]:
                split = self.emit("split", 0, 0)
                self.prog[split][1] = len(self.prog)
                self.node(sub)
                jumps.append(self.emit("jmp", 0))
                self.prog[split][2] = len(self.prog)
            self.node(branches[-1])
            for j in jumps:
                self.prog[j][1] = len(self.prog)
        elif kind == "rep":
            _, sub, low, high = n
            for _ in range(low):
                self.node(sub)
            if high is None:
                loop = self.emit("split", 0, 0)
                self.prog[loop][1] = len(self.prog)
                self.node(sub)
                self.emit("jmp", loop)
                self.prog[loop][2] = len(self.prog)
            else:
                splits = []
                for _ in range(high - low):
                    split = self.emit("split", 0, 0)
                    self.prog[split][1] = len(self.prog)
                    splits.append(split)
                    self.node(sub)
                for s in splits:
                    self.prog[s][2] = len(self.prog)
        # "empty" emits nothing


# --------------------------------------------------------------------------- matching


def _context(text: str, i: int) -> int:
    """Bits describing position i for assertions: 1 start, 2 end, 4 before a final newline,
    8 previous char is a word char, 16 next char is a word char."""
    n = len(text)
    bits = 0
    if i == 0:
        bits |= 1
    elif _is_word(text[i - 1]):
        bits |= 8
    if i == n:
        bits |= 2
    else:
        if _is_word(text[i]):
            bits |= 16
        if i == n - 1 and text[i] == "\n":
            bits |= 4
    return bits


def _assert_holds(kind: str, ctx: int) -> bool:
    if kind in ("start", "text_start"):
        return bool(ctx & 1)
    if kind == "end":
        return bool(ctx & 6)
    if kind == "text_end":
        return bool(ctx & 2)
    boundary = bool(ctx & 8) != bool(ctx & 16)
    return boundary if kind == "word" else not boundary


@dataclass
class Pattern:
    """A compiled policy regex; :meth:`search` is ``re.search(...) is not None`` in linear
    time."""

    source: str
    program: tuple[tuple[object, ...], ...]
    uses_context: bool
    _closures: dict[tuple[frozenset[int], int], tuple[tuple[int, ...], bool]] = field(
        default_factory=dict, repr=False)
    _steps: dict[tuple[frozenset[int], int, str], frozenset[int]] = field(
        default_factory=dict, repr=False)

    def _closure(self, kernel: frozenset[int], ctx: int) -> tuple[tuple[int, ...], bool]:
        """The consuming instructions reachable from kernel without input, and whether the
        match instruction is reachable."""
        key = (kernel, ctx)
        hit = self._closures.get(key)
        if hit is not None:
            return hit
        prog = self.program
        seen: set[int] = set()
        stack = sorted(kernel, reverse=True)
        sets: list[int] = []
        matched = False
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            ins = prog[pc]
            op = ins[0]
            if op == "set":
                sets.append(pc)
            elif op == "match":
                matched = True
            elif op == "jmp":
                stack.append(ins[1])  # type: ignore[arg-type]
            elif op == "split":
                stack.append(ins[2])  # type: ignore[arg-type]
                stack.append(ins[1])  # type: ignore[arg-type]
            elif op == "assert" and _assert_holds(ins[1], ctx):  # type: ignore[arg-type]
                stack.append(pc + 1)
        if len(self._closures) > _CACHE_STATES:
            self._closures.clear()
        out = (tuple(sets), matched)
        self._closures[key] = out
        return out

    def search(self, text: str) -> bool:
        """True when the pattern matches anywhere in text."""
        start = frozenset((0,))
        kernel = start
        steps = self._steps
        for i in range(len(text) + 1):
            ctx = _context(text, i) if self.uses_context else 0
            sets, matched = self._closure(kernel, ctx)
            if matched:
                return True
            if i == len(text):
                return False
            c = text[i]
            key = (kernel, ctx, c)
            nxt = steps.get(key)
            if nxt is None:
                prog = self.program
                nxt = frozenset([pc + 1 for pc in sets if prog[pc][1].matches(c)]  # type: ignore[union-attr]
                                + [0])
                if len(steps) > _CACHE_STATES:
                    steps.clear()
                steps[key] = nxt
            kernel = nxt
        return False


@functools.lru_cache(maxsize=512)
def compile_pattern(source: str) -> Pattern:
    """Compile a policy regex; raises :class:`PatternError` for anything outside the
    supported language."""
    tree = _Parser(source).parse()
    comp = _Compiler()
    comp.node(tree)
    comp.emit("match")
    program = tuple(tuple(ins) for ins in comp.prog)
    uses_context = any(ins[0] == "assert" for ins in program)
    return Pattern(source, program, uses_context)
