"""Cell compositions as token sequences, for a language model over compositions.

A crystal's composition (elements and their counts in the cell, not reduced) becomes
``BOS, E1, n1, E2, n2, ..., Ek, nk, EOS``: each element token followed by its count token,
elements in one fixed order, so that every composition has exactly one sequence: increasing
atomic number (``order="z"``) or increasing
Mendeleev number (``order="mendeleev"``, Pettifor's chemical scale: alkali metals first, then
the other metals, then the anion formers, halogens and O last, as formulas are written), which
puts the counts that balance the charges at the end of the sequence. The vocabulary
(:class:`TokenVocab`) holds the three markers, one token per element H-Lr and one per count
1..``max_sites``.

:func:`allowed_next` says which tokens may follow a prefix so that sampling can only write
sequences that decode: an element after the last one in the order, among the allowed; a count
that keeps the cell at most ``max_sites`` sites; EOS only after a count.

Everything here is a pure function of numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.representations.elements import MAX_Z

PAD, BOS, EOS = 0, 1, 2
"""The marker tokens."""
_FIRST_ELEMENT = 3
ORDERS = ("z", "mendeleev")
"""The element orders of a sequence."""


@lru_cache(maxsize=len(ORDERS))
def element_rank(order: str) -> np.ndarray:
    """Int (MAX_Z + 1,): each atomic number's place in ``order`` (index 0 unused).

    Raises:
        CrysgenError: for an order not in :data:`ORDERS`.
    """
    if order not in ORDERS:
        raise CrysgenError(f"unknown element order {order!r}; choose one of {', '.join(ORDERS)}")
    z = np.arange(1, MAX_Z + 1)
    if order == "z":
        key = z.astype(float)
    else:
        from pymatgen.core import Element

        key = np.array([float(Element.from_Z(int(v)).mendeleev_no or 200) + v / 1000 for v in z])
    rank = np.zeros(MAX_Z + 1, np.int64)
    rank[z[np.argsort(key, kind="stable")]] = np.arange(1, MAX_Z + 1)
    return rank


@dataclass(frozen=True)
class TokenVocab:
    """The token ids of one model: markers, elements 1..MAX_Z, counts 1..``max_sites``.

    Attributes:
        max_sites: the largest count (and the most sites of a cell).
        max_elements: the most elements of a composition (sets the sequence length).
        order: the order of the elements in a sequence (:data:`ORDERS`).
    """

    max_sites: int
    max_elements: int
    order: str = "z"

    @property
    def rank(self) -> np.ndarray:
        """Int (MAX_Z + 1,): each atomic number's place in the order."""
        return element_rank(self.order)

    @property
    def size(self) -> int:
        """Number of tokens."""
        return _FIRST_ELEMENT + MAX_Z + self.max_sites

    @property
    def length(self) -> int:
        """Tokens of the longest sequence: BOS, two per element, EOS."""
        return 2 + 2 * self.max_elements

    def element_token(self, z: np.ndarray | int) -> np.ndarray:
        """Token of atomic number ``z`` (1..MAX_Z)."""
        return np.asarray(z) + (_FIRST_ELEMENT - 1)

    def count_token(self, count: np.ndarray | int) -> np.ndarray:
        """Token of a count (1..max_sites)."""
        return np.asarray(count) + (_FIRST_ELEMENT + MAX_Z - 1)

    def element_of(self, token: np.ndarray) -> np.ndarray:
        """Atomic numbers of element tokens (the inverse of :meth:`element_token`)."""
        return np.asarray(token) - (_FIRST_ELEMENT - 1)

    def count_of(self, token: np.ndarray) -> np.ndarray:
        """Counts of count tokens (the inverse of :meth:`count_token`)."""
        return np.asarray(token) - (_FIRST_ELEMENT + MAX_Z - 1)

    def is_element(self, token: np.ndarray) -> np.ndarray:
        """Bool: the tokens that are elements."""
        token = np.asarray(token)
        return (token >= _FIRST_ELEMENT) & (token < _FIRST_ELEMENT + MAX_Z)

    def is_count(self, token: np.ndarray) -> np.ndarray:
        """Bool: the tokens that are counts."""
        token = np.asarray(token)
        return (token >= _FIRST_ELEMENT + MAX_Z) & (token < self.size)


def encode_compositions(atomic_numbers: np.ndarray, vocab: TokenVocab) -> np.ndarray:
    """Token sequences of cell compositions.

    Args:
        atomic_numbers: int (N, S), 0 = no site (any site order).
        vocab: the vocabulary.

    Returns:
        int64 (N, vocab.length): BOS, (element, count) pairs in the vocabulary's order, EOS, then PAD.

    Raises:
        CrysgenError: for an empty cell, a cell with more than ``max_sites`` sites or more than
            ``max_elements`` elements, or an atomic number outside 1..MAX_Z.
    """
    z = np.asarray(atomic_numbers)
    if z.ndim != 2:
        raise CrysgenError(f"atomic numbers must be (N, S), got shape {z.shape}")
    if (z < 0).any() or (z > MAX_Z).any():
        raise CrysgenError(f"atomic numbers must be 0 (no site) or 1-{MAX_Z}")
    out = np.full((len(z), vocab.length), PAD, np.int64)
    for i, row in enumerate(z):
        elements, counts = np.unique(row[row > 0], return_counts=True)
        if not len(elements) or counts.sum() > vocab.max_sites or len(elements) > vocab.max_elements:
            raise CrysgenError(f"crystal {i}: {counts.sum()} sites of {len(elements)} elements; a "
                               f"composition needs 1-{vocab.max_sites} sites of at most "
                               f"{vocab.max_elements} elements")
        k = len(elements)
        by_order = np.argsort(vocab.rank[elements])
        elements, counts = elements[by_order], counts[by_order]
        out[i, 0] = BOS
        out[i, 1:2 * k + 1:2] = vocab.element_token(elements)
        out[i, 2:2 * k + 2:2] = vocab.count_token(counts)
        out[i, 2 * k + 1] = EOS
    return out


def decode_compositions(tokens: np.ndarray, vocab: TokenVocab, max_sites: int | None = None) -> np.ndarray:
    """Atomic numbers per site of token sequences (the inverse of :func:`encode_compositions`).

    Args:
        tokens: int (N, L) sequences starting with BOS; reading stops at the first EOS or PAD.
        vocab: the vocabulary.
        max_sites: S of the output (default ``vocab.max_sites``).

    Returns:
        int64 (N, S): each element repeated by its count in increasing Z, then 0.

    Raises:
        CrysgenError: for a sequence that is not BOS followed by (element, count) pairs with
            elements in the vocabulary's order, or one with more than S sites.
    """
    tokens = np.asarray(tokens)
    s = vocab.max_sites if max_sites is None else max_sites
    out = np.zeros((len(tokens), s), np.int64)
    for i, row in enumerate(tokens):
        if row[0] != BOS:
            raise CrysgenError(f"sequence {i} does not start with BOS")
        end = next((j for j in range(1, len(row)) if row[j] in (EOS, PAD)), len(row))
        body = row[1:end]
        if len(body) % 2 or not len(body) or not (vocab.is_element(body[0::2]).all()
                                                   and vocab.is_count(body[1::2]).all()):
            raise CrysgenError(f"sequence {i} is not a list of (element, count) pairs")
        zs, counts = vocab.element_of(body[0::2]), vocab.count_of(body[1::2])
        if (np.diff(vocab.rank[zs]) <= 0).any() or counts.sum() > s:
            raise CrysgenError(f"sequence {i}: elements out of order, or more than {s} sites")
        by_z = np.argsort(zs)
        out[i, :counts.sum()] = np.repeat(zs[by_z], counts[by_z])
    return out


def allowed_next(prefix: np.ndarray, vocab: TokenVocab, elements: np.ndarray) -> np.ndarray:
    """Which tokens may follow each prefix so that the finished sequence decodes.

    After BOS or a count: an allowed element after the last one in the vocabulary's order, while
    sites and elements are left, or EOS (not right after BOS); after an element: a count up to
    the sites left. A finished sequence (ending in EOS or PAD) may only continue with PAD.

    Args:
        prefix: int (N, T), T >= 1, sequences starting with BOS.
        vocab: the vocabulary.
        elements: int (K,) the atomic numbers that may be sampled.

    Returns:
        bool (N, vocab.size).
    """
    prefix = np.asarray(prefix)
    t = prefix.shape[1]
    tokens = np.arange(vocab.size)
    allowed_el = np.zeros(vocab.size, bool)
    allowed_el[vocab.element_token(np.asarray(elements, np.int64))] = True
    if not allowed_el.any():
        raise CrysgenError("no element may be sampled")
    used = np.where(vocab.is_count(prefix), vocab.count_of(prefix), 0).sum(axis=1)
    is_el = vocab.is_element(prefix)
    n_el = is_el.sum(axis=1)
    last_pos = np.where(is_el.any(axis=1), t - 1 - np.argmax(is_el[:, ::-1], axis=1), -1)
    rank = np.zeros(vocab.size, np.int64)
    rank[_FIRST_ELEMENT:_FIRST_ELEMENT + MAX_Z] = vocab.rank[1:]
    last_rank = np.where(last_pos >= 0, rank[prefix[np.arange(len(prefix)), np.maximum(last_pos, 0)]], 0)
    last = prefix[:, -1]
    done = ((prefix == EOS) | (prefix == PAD)).any(axis=1)
    after_element = vocab.is_element(last) & ~done
    after_count = ~done & ~after_element
    left = (vocab.max_sites - used)[:, None]
    counts_ok = vocab.is_count(tokens)[None] & (vocab.count_of(tokens)[None] <= left)
    room = (used < vocab.max_sites) & (n_el < vocab.max_elements) & (t < vocab.length - 1)
    elements_ok = allowed_el[None] & (rank[None] > last_rank[:, None]) & room[:, None]
    ok = np.where(after_element[:, None], counts_ok, False)
    ok |= after_count[:, None] & elements_ok
    ok[:, EOS] |= after_count & (last != BOS)
    ok[:, PAD] |= done
    return ok
