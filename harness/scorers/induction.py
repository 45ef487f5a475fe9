"""Induction heads: heads that attend from a repeated token to the token that followed its earlier occurrence.

Inputs are ``[BOS, r1..rN, r1..rN]`` with ``r`` random (seeded) non-special token ids. At position ``N+i`` (the
second ``r_i``) an induction head looks at position ``i+1`` (the first ``r_{i+1}``), i.e. the key ``N-1`` positions
back. A head's score is its mean attention weight on that key over the N second-half queries and all sequences, so
it lies in [0, 1] (1 = a perfect induction head). Reading attention weights needs an eager-attention model
(``load_model(..., attn_implementation="eager")``).

SmolLM2's tokenizer adds no BOS token; ``tokenizer.bos_token_id`` (``<|im_start|>``, the token every chat prompt
starts with) is used, falling back to ``eos_token_id``; ``bos_id=`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..models.arch import attention, shape_of
from ..intervene.heads import HeadSet, top_heads

INDUCTION_LEN = 48  # the ranking's random-token sequence length (each run twice, after a BOS)
INDUCTION_BATCH = 8  # sequences per forward


def require_attention_weights(model: Any, purpose: str) -> None:
    """Raise a clear error unless ``model`` runs eager attention (the only path that returns attention weights)."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise ValueError(f"{purpose} reads attention weights, but this model uses attn_implementation={impl!r}, "
                         "which returns none; load it with load_model(name, attn_implementation='eager')")


def attention_weights(model: Any, layer: int) -> Any:
    """Attention weights ``[B, n_heads, T_q, T_k]`` of ``layer``, read inside a trace (eager attention only)."""
    return attention(model, layer).output[1]


def heads_above(scores: torch.Tensor, threshold: float) -> HeadSet:
    """Every head of a ``[n_layers, n_heads]`` score tensor whose score is >= threshold."""
    return HeadSet((int(layer), int(head)) for layer, head in (scores >= threshold).nonzero().tolist())


def induction_pattern_scores(weights: torch.Tensor, n: int) -> torch.Tensor:
    """Mean attention from each second-copy token to the token after its first occurrence.

    ``weights`` is ``[..., T, T]`` (query, key) over a sequence ``[BOS, r1..rN, r1..rN]`` with ``T = 2n + 1``;
    returns ``[...]``: for queries ``q = n+1 .. 2n``, the mean of ``weights[..., q, q - n + 1]``.
    """
    t = weights.shape[-1]
    if weights.shape[-2] != t or t != 2 * n + 1:
        raise ValueError(f"attention weights of shape {tuple(weights.shape)} do not fit [BOS, r1..r{n}, r1..r{n}] "
                         f"(expected [..., {2 * n + 1}, {2 * n + 1}])")
    # Entries (q, q - (n - 1)) form the diagonal at offset -(n-1); its elements are q = n-1 .. 2n; keep q >= n+1.
    return torch.diagonal(weights, offset=-(n - 1), dim1=-2, dim2=-1)[..., 2:].float().mean(-1)


def repeated_random_tokens(tokenizer: Any, n_sequences: int, seq_len: int, *, seed: int = 0,
                           bos_id: int | None = None) -> torch.Tensor:
    """``[n_sequences, 2*seq_len + 1]`` token ids ``[BOS, r1..rN, r1..rN]``, r uniform over non-special tokens."""
    if n_sequences < 1 or seq_len < 2:
        raise ValueError(f"need n_sequences >= 1 and seq_len >= 2, got {n_sequences} and {seq_len}")
    if bos_id is None:
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos_id is None:
        raise ValueError("the tokenizer has neither a bos nor an eos token: pass bos_id=")
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    gen = torch.Generator().manual_seed(seed)
    r = allowed[torch.randint(len(allowed), (n_sequences, seq_len), generator=gen)]
    bos = torch.full((n_sequences, 1), int(bos_id))
    return torch.cat([bos, r, r], dim=1)


@dataclass
class InductionResult:
    """Per-head induction scores: ``scores`` ``[n_layers, n_heads]``, ``per_sequence`` ``[n_sequences, L, H]``."""

    scores: torch.Tensor
    per_sequence: torch.Tensor
    seq_len: int
    seed: int
    bos_id: int

    def top_k(self, k: int) -> HeadSet:
        """The k heads with the highest induction score."""
        return top_heads(self.scores, k)

    def heads(self, threshold: float) -> HeadSet:
        """Heads whose induction score is >= threshold."""
        return heads_above(self.scores, threshold)


@torch.no_grad()
def induction_scores(model: Any, *, n_sequences: int = 16, seq_len: int = 64, seed: int = 0,
                     batch_size: int = INDUCTION_BATCH,
                     bos_id: int | None = None) -> InductionResult:
    """Score every head on seeded repeated random-token sequences, one batched forward per chunk of sequences."""
    require_attention_weights(model, "induction_scores")
    shape = shape_of(model.config)
    tokens = repeated_random_tokens(model.tokenizer, n_sequences, seq_len, seed=seed, bos_id=bos_id)
    chunks = []
    for batch in tokens.split(batch_size):
        per_layer = []
        with model.trace({"input_ids": batch, "attention_mask": torch.ones_like(batch)}):
            for layer in range(shape.n_layers):
                per_layer.append(induction_pattern_scores(attention_weights(model, layer), seq_len))
        chunks.append(torch.stack(per_layer, dim=1))  # [B, L, H]
    per_sequence = torch.cat(chunks).cpu()
    return InductionResult(scores=per_sequence.mean(0), per_sequence=per_sequence, seq_len=seq_len, seed=seed,
                           bos_id=int(tokens[0, 0]))
