"""What the replay's memory holds: page content that compresses like real tool-call memory.

zram (and zswap) store a page filled with one repeated value for free and compress the rest
page by page, so memory written with a constant (or left zero) makes swap look free. Tool-call
memory (interpreters' heaps, test data, build objects) is neither: it is a mix of incompressible
bytes (pointers, hashes, packed numbers) and text-like runs (identifiers, paths, source).

Each 4 KiB page of :func:`block` holds RANDOM_PER_PAGE random bytes and then words drawn from a
vocabulary of identifiers and source fragments, which makes a page compress ~2.5-3x (measured
in docs/replay.md: zlib, lzma, and lz4 in a real zram device). The block is made once per
process (~50 ms); :func:`fill` copies it into a chunk rotated by an odd offset that changes
every time, so no two chunks hold the same pages, at memcpy speed (~1 GB/s with page faults).

Standard library only (the tenant and the allocator import it inside the replay image).
"""

from __future__ import annotations

import mmap
import os
import random
from itertools import count
from typing import Union

#: A writable buffer: an mmap, a bytearray, a memoryview of one.
Buffer = Union[bytearray, memoryview, "mmap.mmap"]

PAGE = 4096
#: Size of the pre-generated block (and of the allocator's chunks).
BLOCK = 4 << 20
#: Random (incompressible) bytes at the start of each page; the rest is text-like.
RANDOM_PER_PAGE = 1200
#: The text part of a page repeats a snippet of this many bytes (as heaps repeat structure).
SNIPPET = 320
#: Seed of the text part (the random part comes from os.urandom).
SEED = 11
_VOCABULARY = ("self return import def class None True False assert pytest fixture tmp_path result "
          "value config request response items append len( range( dict list str int json "
          "path os.path.join __init__ lambda yield await async with open( raise ValueError "
          "KeyError except finally /usr/lib/python3/ site-packages/ .py test_ node_modules/ "
          "src/ 0x7f utf-8 :: -> == [] {}")
_WORDS = tuple(_VOCABULARY.split())

_block: memoryview | None = None
_offsets = count(1)


def _snippet(rng: random.Random, n: int) -> bytes:
    """n bytes of words from the vocabulary, space separated, in random order."""
    parts: list[str] = []
    size = 0
    while size <= n:
        w = rng.choice(_WORDS)
        if rng.random() < 0.3:
            w += str(rng.randrange(1000))
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts).encode()[:n]


def page(rng: random.Random) -> bytes:
    """One page: RANDOM_PER_PAGE random bytes, then a snippet repeated to the page's end."""
    rest = PAGE - RANDOM_PER_PAGE
    snip = _snippet(rng, SNIPPET)
    return os.urandom(RANDOM_PER_PAGE) + (snip * (rest // SNIPPET + 1))[:rest]


def block() -> memoryview:
    """The process's block of BLOCK bytes (made on first use)."""
    global _block
    if _block is None:
        rng = random.Random(SEED)
        _block = memoryview(b"".join(page(rng) for _ in range(BLOCK // PAGE)))
    return _block


def _pieces(n: int) -> list[memoryview]:
    """Slices of the block making n bytes, starting at an offset that differs every call."""
    b = block()
    off = (next(_offsets) * 4093 * 7) % BLOCK
    out: list[memoryview] = []
    done = 0
    while done < n:
        k = min(n - done, BLOCK - off)
        out.append(b[off:off + k])
        done += k
        off = 0
    return out


def fill(buf: Buffer, n: int) -> None:
    """Write n bytes of page content into buf[0:n] (a writable buffer: mmap, bytearray),
    rotated by an offset that differs at every call."""
    view = memoryview(buf).cast("B")
    done = 0
    for piece in _pieces(n):
        view[done:done + len(piece)] = piece
        done += len(piece)


def content(n: int) -> bytes:
    """n bytes of page content (a new buffer, one copy)."""
    return b"".join(_pieces(n))
