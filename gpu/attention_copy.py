"""The solve's pass 0: each row's candidates z > τ₁ copied from the live tiles into its
buffer (values, and key indices for the gathered output), with per-row stores from
reductions (``_store_rows``; see ``gpu/attention.py``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_common import _tile_s, _zval


@triton.jit
def _store_rows(ptr, bits, mask, ASM: tl.constexpr = False):
    """Store one 32-bit pattern ``bits`` (int32) per row where ``mask`` (to a float32 or int32
    buffer).  With
    ASM a predicated ``st.global.b32`` per element, in the layout the values have (the rows of a
    tile's reductions): ``tl.store`` first moves pointer, value and mask to a store layout
    through shared memory, three conversions with barriers per store, several stores per tile in
    the solve's pass 0.  (Threads holding the same row store the same value.)  The interpreter
    has no inline assembly: launches there pass ASM = False."""
    if ASM:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b32 [$1], $2; mov.b32 $0, 0; }",
            "=r,l,r,r", [ptr.to(tl.int64), bits, mask.to(tl.int32)], dtype=tl.int32, is_pure=False,
            pack=1)
    else:
        tl.store(ptr, bits.to(ptr.dtype.element_ty, bitcast=True), mask=mask)


@triton.jit
def _put_value(ptr, val, mask, ASM: tl.constexpr = False):
    """Store candidate values (float32) into the row buffers (``_store_rows``)."""
    _store_rows(ptr, val.to(tl.int32, bitcast=True), mask, ASM)


@triton.jit
def _put_index(ptr, idx, mask, ASM: tl.constexpr = False):
    """Store key indices into the float candidate buffer (bit patterns: the second half of each
    buffer row, ``I_row`` = ``C_row`` + CAP, holds the first half's key indices)."""
    _store_rows(ptr, idx.to(tl.int32), mask, ASM)


@triton.jit
def _top_two(s, thr):
    """Each row's two largest scores of a tile; where a row has exactly two candidates
    (> thr) but the second largest distinct value is not one, the top value is tied and
    counts twice."""
    t1 = tl.max(s, axis=1)
    t2 = tl.max(tl.where(s < t1[:, None], s, float("-inf")), axis=1)
    return t1, tl.where(t2 > thr, t2, t1)


@triton.jit
def _store_top_two(s, thr, c, m, ncand, C_row, first, second, CAP: tl.constexpr, I_row=None,
                   start_n=0, csum=None, offs_n=None, BLOCK_N: tl.constexpr = 1,
                   GATHER: tl.constexpr = False, ASM: tl.constexpr = False):
    """Each row's top value to slot ncand where ``first``, its second (``_top_two``) to ncand + 1
    where ``second`` (slots ≥ CAP dropped), as z = c·s − m (``_zval``).  With GATHER their key
    indices too: the top value's first column j₁, and the other candidate's as ``csum`` − j₁
    (csum: the sum of the row's candidate columns in this tile, two of them where ``second``; a
    tied top value is both)."""
    t1, t2 = _top_two(s, thr)
    k1 = first & (ncand < CAP)
    k2 = second & (ncand + 1 < CAP)
    _put_value(C_row + ncand, _zval(t1, c, m), k1, ASM)
    _put_value(C_row + ncand + 1, _zval(t2, c, m), k2, ASM)
    if GATHER:
        j1 = tl.min(tl.where(s == t1[:, None], offs_n[None, :], BLOCK_N), axis=1)
        _put_index(I_row + ncand, start_n + j1, k1, ASM)
        _put_index(I_row + ncand + 1, start_n + csum - j1, k2, ASM)


@triton.jit
def _copy_by_extraction(s, c, m, cnt, rounds, ncand, C_row, rmask, offs_n, CAP: tl.constexpr,
                        BLOCK_N: tl.constexpr, I_row=None, start_n=0, GATHER: tl.constexpr = False,
                        ASM: tl.constexpr = False):
    """A tile's candidates (the cnt largest values of each row) to the row buffers at slots
    ncand, ncand + 1, …: ``rounds`` = max cnt rounds of (row max, its first column, remove it).
    Ties are kept: one instance is removed per round.  Values stored as z = c·s − m; with
    GATHER the key index of each value goes to the same slot of ``I_row``."""
    zz = s
    for r in range(0, rounds):
        t = tl.max(zz, axis=1)
        j = tl.min(tl.where(zz == t[:, None], offs_n[None, :], BLOCK_N), axis=1)
        keep = (cnt > r) & (ncand + r < CAP) & rmask
        _put_value(C_row + ncand + r, _zval(t, c, m), keep, ASM)
        if GATHER:
            _put_index(I_row + ncand + r, start_n + j, keep, ASM)
        zz = tl.where(offs_n[None, :] == j[:, None], float("-inf"), zz)


@triton.jit
def _copy_all(s, thr, c, m, ncand, C_row, rmask, CAP: tl.constexpr, I_row=None, cols=None,
              GATHER: tl.constexpr = False, ASM: tl.constexpr = False):
    """Every candidate s > thr of a tile to its row's buffer as z = c·s − m, at slots ncand,
    ncand + 1, … (a prefix sum along the row; slots ≥ CAP are dropped, the row then overflows);
    with GATHER their key indices ``cols`` to the same slots of ``I_row``.  (A scatter of the
    whole tile: with ASM, in the scores' own layout, ``_store_rows``.)"""
    is_c = s > thr[:, None]
    slot = ncand[:, None] + tl.cumsum(is_c.to(tl.int32), axis=1) - 1
    keep = is_c & (slot < CAP) & rmask[:, None]
    _put_value(C_row[:, None] + slot, _zval(s, c, m[:, None]), keep, ASM)
    if GATHER:
        _put_index(I_row[:, None] + slot, cols[None, :] + slot * 0, keep, ASM)


@triton.jit
def _copy_tile(s, thr, c, m, ncand, C_row, rmask, offs_n, CAP: tl.constexpr,
               BLOCK_N: tl.constexpr, MODE: tl.constexpr, DIAG: tl.constexpr, I_row=None,
               start_n=0, GATHER: tl.constexpr = False, ASM: tl.constexpr = False):
    """Append each row's candidates of one tile to its buffer (slots ncand, ncand + 1, …; slots
    ≥ CAP are dropped); returns the new counts (which may exceed CAP).  The tile comes as its
    unscaled scores s, a candidate is s > thr (``_collect``'s threshold), and the values stored
    are z = c·s − m (``_zval``), one fma per stored value instead of one per score.  The usual tile
    has at most two candidates per row: the row's top one or two values are stored, no prefix
    sum; a tile where some row has more takes a few extraction rounds (α ∈ {1.5, 2}) or the
    prefix-sum copy (longer supports).  With GATHER each value's key index goes to the same slot
    of ``I_row`` (for the gathered output, ``_gather_out``), at little extra cost: the count is
    taken together with the sum of the candidates' columns (one float sum of MULT + column per
    candidate: exact integers, MULT above any column sum of the tile), which is the column
    of a row's only candidate and, less the top value's column, that of the second; the
    extraction rounds know their columns anyway."""
    is_c = s > thr[:, None]
    # counted in float (the scores' layout); an int32 count shared with the prefix sum below
    # made the compiler convert the whole indicator tile's layout on every tile
    if GATHER:
        # (a power of two above the largest column sum BLOCK_N·(BLOCK_N − 1)/2; the total stays
        # below 2^24 for BLOCK_N ≤ 256)
        MULT: tl.constexpr = 4096 if BLOCK_N <= 64 else (8192 if BLOCK_N <= 128 else 32768)
        a = tl.sum(tl.where(is_c, offs_n.to(tl.float32)[None, :] + MULT, 0.0), axis=1).to(tl.int32)
        cnt = a // MULT
        csum = a % MULT
    else:
        cnt = tl.sum(tl.where(is_c, 1.0, 0.0), axis=1).to(tl.int32)
        csum = cnt
    if DIAG == 7:
        # profiling only (wrong when a row has > 2 candidates in a tile): the top two
        # always, without the block-wide count maximum and its branch
        _store_top_two(s, thr, c, m, ncand, C_row, (cnt >= 1) & rmask, (cnt >= 2) & rmask, CAP,
                       I_row, start_n, csum, offs_n, BLOCK_N, GATHER, ASM)
    elif DIAG != 1:
        worst = tl.max(cnt, axis=0)
        if worst <= 1:
            k1 = (cnt >= 1) & (ncand < CAP) & rmask
            _put_value(C_row + ncand, _zval(tl.max(s, axis=1), c, m), k1, ASM)
            if GATHER:
                _put_index(I_row + ncand, start_n + csum, k1, ASM)
        elif worst <= 2:
            # at most two candidates per row in this tile (the usual case): the row's top two
            # values, no prefix sum and no tile-wide scatter
            _store_top_two(s, thr, c, m, ncand, C_row, (cnt >= 1) & rmask, (cnt == 2) & rmask,
                           CAP, I_row, start_n, csum, offs_n, BLOCK_N, GATHER, ASM)
        elif (MODE == 1 or MODE == 2) and DIAG != 8:
            # short supports: a few more rounds of the same (a prefix sum over the tile would
            # double the kernel's registers, and so halve its occupancy, for a rare case)
            _copy_by_extraction(s, c, m, cnt, worst, ncand, C_row, rmask, offs_n, CAP, BLOCK_N,
                                I_row, start_n, GATHER, ASM)
        else:
            _copy_all(s, thr, c, m, ncand, C_row, rmask, CAP, I_row, start_n + offs_n, GATHER, ASM)
    if DIAG == 7:
        # (profiling: the slots of candidates not stored are not counted, so the gathered
        # output never reads unwritten slots)
        cnt = tl.minimum(cnt, 2)
    return ncand + cnt


@triton.jit
def _collect(q, K_base, L_row, n_list, offs_n, offs_d, rows, m, c, start_m, lq, lk, stride_kn,
             cbound, ncand, C_row, rmask, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
             PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MODE: tl.constexpr,
             CAP: tl.constexpr, DIAG: tl.constexpr, I_row=None, GATHER: tl.constexpr = False,
             ASM: tl.constexpr = False):
    """One sweep over the live tiles ``L_row[0:n_list]`` appending each row's candidates
    z > cbound to its buffer (slots ncand, ncand + 1, …; slots ≥ CAP are dropped).  Returns the
    rows' candidate counts (ncand + candidates found, which may exceed CAP).

    The tiles are compared unscaled: z = fl(c·s − m) > cbound implies s > (cbound + m)/c up to
    the roundings of the fma and of this quotient (a few units of 2⁻²⁴ relative), so with the
    threshold lowered by 10⁻⁶ of its terms every candidate passes; the few extra values that
    pass with z ≤ cbound are scores of the row below every iterate τ' ≥ cbound (weight 0), so
    the buffer stays a subset of the row holding all of its candidates."""
    t = (cbound + m) / c
    thr = t - (tl.abs(t) + tl.abs(cbound) / c) * 1e-6
    for i in range(0, n_list):
        start_n = tl.load(L_row + i) * BLOCK_N
        s = _tile_s(q, K_base, start_n, offs_n, offs_d, rows, start_m, lq, lk, stride_kn,
                    HEAD_DIM, CAUSAL, PREC, BLOCK_M, BLOCK_N)
        ncand = _copy_tile(s, thr, c, m, ncand, C_row, rmask, offs_n, CAP, BLOCK_N, MODE, DIAG,
                           I_row, start_n, GATHER, ASM)
    return ncand
