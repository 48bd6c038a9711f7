from __future__ import annotations

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.representations.composition_tokens import (
    BOS,
    EOS,
    PAD,
    TokenVocab,
    allowed_next,
    decode_compositions,
    encode_compositions,
)

VOCAB = TokenVocab(max_sites=20, max_elements=4)


def _random_cells(n: int, rng: np.random.Generator) -> np.ndarray:
    z = np.zeros((n, 20), np.int64)
    for i in range(n):
        k = rng.integers(1, 5)
        elements = rng.choice(np.arange(1, 104), k, replace=False)
        counts = rng.integers(1, 20 // k + 1, k)
        sites = np.repeat(elements, counts)
        z[i, :len(sites)] = rng.permutation(sites)  # any site order
    return z


@pytest.mark.parametrize("order", ["z", "mendeleev"])
def test_encode_decode_round_trip_gives_sites_by_atomic_number(order):
    vocab = TokenVocab(20, 4, order)
    z = _random_cells(200, np.random.default_rng(0))
    tokens = encode_compositions(z, vocab)
    back = decode_compositions(tokens, vocab)
    for row, got in zip(z, back, strict=True):
        assert got.tolist() == sorted(row[row > 0].tolist()) + [0] * int((row == 0).sum())
    # one sequence per composition: a permutation of the sites gives the same tokens
    shuffled = np.array([np.random.default_rng(1).permutation(r) for r in z])
    assert (encode_compositions(shuffled, vocab) == tokens).all()


def test_the_mendeleev_order_writes_cations_first_and_oxygen_last():
    vocab = TokenVocab(20, 4, "mendeleev")
    lifepo4 = np.array([[3, 26, 15, 8, 8, 8, 8]])  # Li Fe P O4
    tokens = encode_compositions(lifepo4, vocab)[0]
    assert tokens[1:9:2].tolist() == vocab.element_token(np.array([3, 26, 15, 8])).tolist()
    e, c = vocab.element_token, vocab.count_token
    after_fe = allowed_next(np.array([[BOS, e(26), c(1)]]), vocab, np.array([3, 8, 15, 26]))[0]
    assert set(np.flatnonzero(after_fe)) == {e(15), e(8), EOS}  # Li comes before Fe, so not after it
    with pytest.raises(CrysgenError, match="out of order"):
        decode_compositions(np.array([[BOS, e(8), c(1), e(3), c(1), EOS]]), vocab)


def test_tokens_spell_bos_element_count_pairs_eos():
    tokens = encode_compositions(np.array([[8, 26, 8, 26, 8, 0]]), VOCAB)[0]
    assert tokens[0] == BOS and tokens[5] == EOS and (tokens[6:] == PAD).all()
    assert tokens[1] == VOCAB.element_token(8) and tokens[2] == VOCAB.count_token(3)
    assert tokens[3] == VOCAB.element_token(26) and tokens[4] == VOCAB.count_token(2)


@pytest.mark.parametrize("bad", [np.zeros((1, 4), int), np.array([[1, 2, 3, 4, 5]]), np.full((1, 21), 3)])
def test_cells_the_vocabulary_cannot_write_are_refused(bad):
    with pytest.raises(CrysgenError):
        encode_compositions(bad, VOCAB)


def test_decode_refuses_sequences_that_are_not_increasing_pairs():
    e, c = VOCAB.element_token, VOCAB.count_token
    for seq in ([BOS, e(26), c(1), e(8), c(1), EOS], [BOS, c(1), e(8), EOS], [BOS, e(8), EOS],
                [e(8), c(1), EOS]):
        with pytest.raises(CrysgenError):
            decode_compositions(np.array([seq]), VOCAB)


def test_allowed_next_follows_the_grammar():
    e, c = VOCAB.element_token, VOCAB.count_token
    elements = np.array([3, 8, 26])
    prefixes = ([BOS], [BOS, e(8)], [BOS, e(8), c(3)], [BOS, e(8), c(20)], [BOS, e(8), c(1), EOS])
    ok = [allowed_next(np.array([p]), VOCAB, elements)[0] for p in prefixes]
    assert set(np.flatnonzero(ok[0])) == set(e(elements))  # an element first, no EOS
    assert set(np.flatnonzero(ok[1])) == set(c(np.arange(1, 21)))
    assert set(np.flatnonzero(ok[2])) == {e(26), EOS}  # above O only, or stop
    assert set(np.flatnonzero(ok[3])) == {EOS}  # the cell is full
    assert set(np.flatnonzero(ok[4])) == {PAD}
    # after 3 of 20 sites, counts up to 17
    assert set(np.flatnonzero(allowed_next(np.array([[BOS, e(3), c(3), e(8)]]), VOCAB, elements)[0])) == set(
        c(np.arange(1, 18)))


def test_random_walks_through_allowed_tokens_always_decode_within_the_limits():
    rng = np.random.default_rng(0)
    vocab = TokenVocab(max_sites=12, max_elements=3)
    elements = np.array([1, 8, 11, 17, 26, 92])
    seq = np.full((500, 1), BOS)
    for _ in range(vocab.length - 1):
        ok = allowed_next(seq, vocab, elements)
        pick = np.array([rng.choice(np.flatnonzero(r)) for r in ok])
        seq = np.concatenate([seq, pick[:, None]], axis=1)
    z = decode_compositions(seq, vocab)
    sites = (z > 0).sum(axis=1)
    assert sites.min() >= 1 and sites.max() <= 12
    assert max(len(set(r[r > 0])) for r in z) <= 3 and set(np.unique(z)) - {0} <= set(elements)
