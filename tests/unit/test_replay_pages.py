"""The replay's page content: it compresses like real memory (zlib and lzma per 4 KiB page as
proxies for zram's lz4/zstd), is never same-filled, differs from chunk to chunk, and is fast
to write."""

from __future__ import annotations

import lzma
import mmap
import time
import zlib

from agentshim.replay import pages
from agentshim.replay.alloc import Holder
from agentshim.workload import allocate


def per_page_ratio(raw: bytes, compress) -> float:
    """Original / compressed size, each 4 KiB page compressed on its own (as zram does)."""
    size = sum(len(compress(raw[i:i + pages.PAGE])) for i in range(0, len(raw), pages.PAGE))
    return len(raw) / size


def lzma_raw(x: bytes) -> bytes:
    return lzma.compress(x, format=lzma.FORMAT_RAW,
                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 1}])


def chunk(n: int = pages.BLOCK) -> bytes:
    m = mmap.mmap(-1, n)
    pages.fill(m, n)
    return bytes(m)


def test_pages_compress_like_real_memory():
    raw = chunk()
    z, x = per_page_ratio(raw, lambda b: zlib.compress(b, 1)), per_page_ratio(raw, lzma_raw)
    assert 2.3 <= z <= 3.2, z
    assert 2.3 <= x <= 3.3, x


def test_no_page_is_same_filled_and_chunks_differ():
    a, b = chunk(), chunk()
    assert a != b
    first = {a[i:i + pages.PAGE] for i in range(0, len(a), pages.PAGE)}
    assert all(len(set(p)) > 16 for p in first)  # far from one repeated value
    assert not first & {b[i:i + pages.PAGE] for i in range(0, len(b), pages.PAGE)}
    odd = bytearray(10_000)
    pages.fill(odd, 10_000)
    assert odd.count(0) < 1000  # written to the end, not left zero


def test_holder_and_workload_write_that_content():
    h = Holder()
    h.resize(8 << 20)
    raw = b"".join(bytes(m) for m in h.maps)
    h.release()
    assert per_page_ratio(raw, lambda b: zlib.compress(b, 1)) < 3.5
    (data,) = allocate(4, step_mb=4)
    assert per_page_ratio(data, lambda b: zlib.compress(b, 1)) < 3.5


def test_filling_is_fast():
    pages.block()
    n, t = 0, time.perf_counter()
    while n < 256:
        m = mmap.mmap(-1, pages.BLOCK)
        pages.fill(m, pages.BLOCK)
        m.close()
        n += 4
    rate = n / (time.perf_counter() - t)
    assert rate > 300, f"{rate:.0f} MB/s"
