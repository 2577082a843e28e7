"""Compiled scans over the bytes of a text block (numba), for blocks large enough to repay loading the compiler.

numba caches the compiled code beside this file and pickles this module's import name into it; the cache is
rebuilt when this file changes, so the name (citylake.ingestion.text_kernels) is written here to make a rename touch the file.
"""

from __future__ import annotations

import numba
import numpy as np

QUOTE, NEWLINE = ord('"'), ord("\n")


@numba.njit(nogil=True, cache=True)
def odd_quote_lines(text: np.ndarray) -> np.ndarray:
    """Numbers (0 = the block's first) of the lines holding an odd number of double quotes, in one pass."""
    found = np.empty(64, np.int64)
    count = line = quotes = 0
    for i in range(text.size + 1):
        if i < text.size and text[i] != NEWLINE:
            quotes += text[i] == QUOTE
            continue
        if quotes % 2 == 1:
            if count == found.size:
                found = np.concatenate((found, np.empty(found.size, np.int64)))
            found[count] = line
            count += 1
        line += 1
        quotes = 0
    return found[:count]
