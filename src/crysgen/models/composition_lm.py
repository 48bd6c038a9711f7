"""A small autoregressive language model over cell compositions: a learned composition prior.

The network (:class:`CompositionLM`) is a causal transformer over the token sequences of
:mod:`crysgen.representations.composition_tokens` (``BOS, E1, n1, ..., Ek, nk, EOS``) with
learned position embeddings: it predicts each token from the ones before it, so
p(composition) = prod p(token | prefix). :class:`CompositionModel` is the saved bundle: the
network, the elements it may write (those of its training crystals) and the training data's
fingerprint; :meth:`CompositionModel.sample` draws compositions token by token, allowing only
tokens that keep the sequence decodable (:func:`~crysgen.representations.composition_tokens.allowed_next`).

It is the ``--composition-prior MODEL_DIR`` of ``crysgen sample``: compositions drawn from it,
then structures from an atom diffusion model given each composition (composition first).
``crysgen train composition`` fits one (:mod:`crysgen.training.compositions`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from crysgen.errors import CrysgenError
from crysgen.models.model_dir import ModelFiles
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.representations.composition_tokens import (
    BOS,
    PAD,
    TokenVocab,
    allowed_next,
    decode_compositions,
    encode_compositions,
)

KIND = "composition"
B = TypeVar("B", bound="CompositionModel")


@dataclass
class CompositionLMConfig:
    """Size of the network and of the compositions it writes.

    Attributes:
        max_sites: most sites of a cell (and the largest count).
        max_elements: most elements of a composition.
        d_model: width of the token embeddings.
        layers: transformer blocks.
        heads: attention heads.
        dropout: dropout in the blocks (training only).
        order: the order of the elements in a sequence (``"z"`` or ``"mendeleev"``; see
            :mod:`crysgen.representations.composition_tokens`).
    """

    max_sites: int = 20
    max_elements: int = 8
    d_model: int = 128
    layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    order: str = "mendeleev"

    @property
    def vocab(self) -> TokenVocab:
        """The token vocabulary of these sizes and this order."""
        return TokenVocab(self.max_sites, self.max_elements, self.order)


class CompositionLM(nn.Module):
    """Causal transformer: token sequences (N, T) -> next-token logits (N, T, V)."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.cfg = CompositionLMConfig(**config)
        vocab, d = self.cfg.vocab, self.cfg.d_model
        self.token = nn.Embedding(vocab.size, d)
        self.position = nn.Embedding(vocab.length, d)
        block = nn.TransformerEncoderLayer(d, self.cfg.heads, 4 * d, self.cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, self.cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab.size)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able)."""
        return asdict(self.cfg)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next token at every position.

        Args:
            tokens: int64 (N, T), T <= vocab.length.

        Returns:
            float (N, T, V): entry t scores token t + 1 given tokens 0..t.
        """
        t = tokens.shape[1]
        x = self.token(tokens) + self.position(torch.arange(t, device=tokens.device))
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device)
        return self.head(self.norm(self.blocks(x, mask=causal, is_causal=True)))

    def step(self, token: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Next-token logits after one more token, reusing the keys and values of the ones before.

        Equal to ``forward`` on the whole prefix at its last position (eval mode: no dropout), at
        one token's cost per block instead of the prefix's.

        Args:
            token: int64 (N,), the token at the first position ``cache`` does not hold yet.
            cache: per block, keys and values (N, heads, t, d / heads) of the earlier positions;
                empty before the first token; extended in place.

        Returns:
            float (N, V).
        """
        t = cache[0][0].shape[2] if cache else 0
        x = (self.token(token) + self.position.weight[t])[:, None]  # (N, 1, d)
        for i, layer in enumerate(self.blocks.layers):
            attn = layer.self_attn
            heads = attn.num_heads
            qkv = nn.functional.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
            q, k, v = (u.unflatten(-1, (heads, -1)).transpose(1, 2) for u in qkv.chunk(3, -1))
            if len(cache) <= i:
                cache.append((k, v))
            else:
                cache[i] = (torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2))
            out = nn.functional.scaled_dot_product_attention(q, *cache[i])  # all earlier positions
            x = x + attn.out_proj(out.transpose(1, 2).flatten(2))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
        return self.head(self.norm(x[:, 0]))


def sequence_nll(net: CompositionLM, tokens: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats) of each sequence, float (N,); PAD targets are not scored."""
    logits = net(tokens[:, :-1])
    target = tokens[:, 1:]
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return (nll * (target != PAD)).sum(dim=1)


@dataclass
class CompositionModel(SavedModel):
    """A trained composition language model as saved: network, allowed elements, data fingerprint.

    Attributes:
        net: the network (eval mode after loading).
        elements: the atomic numbers it may write (its training crystals' elements).
        data: fingerprint of the training data.
    """

    KINDS = (KIND,)
    DESCRIPTION = "composition model"

    net: CompositionLM
    elements: list[int]
    data: dict[str, Any] = field(default_factory=dict)

    def contents(self) -> ModelContents:
        """The network's config and weights, and the allowed elements."""
        return ModelContents(KIND, {"net": self.net.config, "elements": [int(z) for z in self.elements]},
                             self.net.state_dict(), self.data)

    @classmethod
    def from_files(cls: type[B], files: ModelFiles) -> B:
        """The model of a loaded ``composition`` directory (see :meth:`SavedModel.from_pretrained`)."""
        net = CompositionLM(**files.config["net"])
        net.load_state_dict(files.state_dict)
        return cls(net.eval(), [int(z) for z in files.config["elements"]], files.data)

    @property
    def vocab(self) -> TokenVocab:
        """The network's token vocabulary."""
        return self.net.cfg.vocab

    @torch.no_grad()
    def sample(self, n: int, *, max_sites: int | None = None, elements: set[int] | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               batch_size: int = 4096) -> np.ndarray:
        """``n`` compositions drawn token by token.

        Args:
            n: compositions.
            max_sites: S of the output and the most sites a drawn cell may have (default, and
                at most, the model's ``max_sites``).
            elements: write only these of the model's elements (None: all of them).
            temperature: divides the logits (1: the learned distribution).
            generator: seeds the draw (CPU generator).
            batch_size: sequences drawn at once.

        Returns:
            int64 (n, S) atomic numbers per site, by increasing Z, 0 = no site.

        Raises:
            CrysgenError: for a temperature <= 0, ``max_sites`` out of range, or ``elements``
                without any of the model's.
        """
        cfg = self.net.cfg
        s = cfg.max_sites if max_sites is None else int(max_sites)
        if not 1 <= s <= cfg.max_sites:
            raise CrysgenError(f"this composition model writes 1 to {cfg.max_sites} sites, not {s}")
        if not temperature > 0:
            raise CrysgenError(f"the temperature must be positive, got {temperature}")
        vocab = TokenVocab(s, cfg.max_elements, cfg.order)  # counts above s are never allowed
        allowed = np.array(sorted(set(self.elements) if elements is None else set(self.elements) & elements))
        if not len(allowed):
            raise CrysgenError("none of the composition model's elements is allowed")
        device = next(self.net.parameters()).device
        out = np.zeros((n, s), np.int64)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            seq = torch.full((m, 1), BOS, dtype=torch.long)
            cache: list[tuple[torch.Tensor, torch.Tensor]] = []
            for _ in range(vocab.length - 1):
                logits = self.net.step(seq[:, -1].to(device), cache).float().cpu()[:, :vocab.size]
                logits = logits / temperature
                ok = torch.from_numpy(allowed_next(seq.numpy(), vocab, allowed))
                probs = torch.softmax(logits.masked_fill(~ok, float("-inf")), dim=-1)
                seq = torch.cat([seq, torch.multinomial(probs, 1, generator=generator)], dim=1)
            out[start:start + m] = decode_compositions(seq.numpy(), vocab, s)
        return out

    @torch.no_grad()
    def nll(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (nats) of each cell composition, float (N,).

        Raises:
            CrysgenError: for compositions the vocabulary cannot write (too many sites or elements).
        """
        tokens = torch.from_numpy(encode_compositions(atomic_numbers, self.vocab))
        device = next(self.net.parameters()).device
        return sequence_nll(self.net, tokens.to(device)).cpu().numpy()
