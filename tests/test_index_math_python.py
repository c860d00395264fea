"""The C++ index math (through fastna._C) agrees with the Python window function."""
import pytest

from fastna import _ext
from fastna.index_math import window

C = _ext.load()
pytestmark = pytest.mark.skipif(C is None, reason="fastna._C is not built")


def _param_sets(max_len=16):
    for L in range(2, max_len + 1):
        for K in range(2, L + 1):
            for d in range(1, L // K + 1):
                for s in range(1, K + 1):
                    for c in (False, True):
                        yield L, K, s, d, c


@pytest.mark.parametrize("L", range(2, 17))
def test_window_and_inverse_window_match(L):
    for L_, K, s, d, c in _param_sets(L):
        if L_ != L:
            continue
        wins = [window(L, K, s, d, c, i) for i in range(L)]
        for i in range(L):
            assert tuple(C.window(L, K, s, d, c, i)) == wins[i], (L, K, s, d, c, i)
        for j in range(L):
            g, jl = j % d, j // d
            hits = [i // d for i in range(g, L, d) if wins[i][0] <= jl < wins[i][1]]
            want = (hits[0], hits[-1] + 1) if hits else None
            got = tuple(C.inverse_window(L, K, s, d, c, j))
            if want is None:
                assert got[1] <= got[0], (L, K, s, d, c, j, got)
            else:
                assert got == want, (L, K, s, d, c, j)
