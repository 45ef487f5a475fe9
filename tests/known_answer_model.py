"""A tiny Llama whose preference head is constructed, not learned: the harness's known-answer model.

Every user signs their texts with a sign-off word (``cheers``, ``regards``, ...). Each profile item is
``profile <4 words> -- <sign-off>``, the gold output is ``<words> -- <sign-off>``, and one head, the **copy head**,
attends from the cue ``--`` to the sign-off tokens in the context and writes the one it finds into the logits. So the
gold sign-off is predicted from the user's own profile, mispredicted from another user's, and guessed without one.
The other heads do generic work, so a scorer has something to get wrong:

- ``bigram`` (L0H0) attends to the current token's occurrences and predicts the toy grammar's next word: most of the
  loss, in every prompt variant alike (the big *damage* head, which plain PCS ranks first);
- ``prior`` (L1H0) attends to ``<bos>`` and boosts every word and sign-off over the markers: damage under zero
  ablation, but a constant output (so none under mean ablation);
- ``presence`` (L0H3) attends to the ``profile`` marker and boosts ``--``: it helps with *any* profile, so it has a
  profile-contrast (own − none) effect but no user-specific (own − other) one;
- ``decoy`` (L1H1) attends to sign-offs like the copy head but writes to a residual direction nothing reads;
- the rest are zero.

Construction: the residual stream is a set of named subspaces (token one-hot, a constant, one output subspace per
role); every RMSNorm weight is ``sqrt(2 / hidden)`` so an embedding (two unit entries) comes out of a norm unchanged,
and heads write with magnitude ``WRITE`` (0.01) so norms barely move; ``lm_head`` reads only the roles' subspaces.
Attention scores are content-only: linear RoPE with a 1e9 factor makes every rotation angle below 1e-7 rad. MLPs
are zero.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from harness.data import Example, ProfileItem, Split
from harness.data.prompts import Prompt
from harness.intervene.heads import Head

SPECIALS = ("<pad>", "<bos>", "profile", "input", "answer", "--")
SIGNOFFS = ("cheers", "regards", "best", "thanks", "yours", "love")
WORDS = ("we", "went", "to", "the", "park", "sun", "i", "like", "rain", "and", "it", "was", "fun", "today",
         "write", "about", "a", "day")
VOCAB = SPECIALS + SIGNOFFS + WORDS
CUE = "--"

HIDDEN, N_HEADS, HEAD_DIM, N_LAYERS = 128, 4, 32, 2
TOK, CONST = 0, 30  # residual subspaces: token one-hot [0, V), a constant 1
# Where each role writes. The copy subspace lies outside the copy head's own slice index range (64-95 for head 2):
# an ablation that zeroed the projection's *output* dims instead of a head's input slice would miss it.
OUT = {"copy": 32, "bigram": 64, "prior": 96, "presence": 97, "decoy": 98}
WRITE = 0.01  # magnitude of every head's write (keeps RMSNorm scales within 1e-4 of 1)
ROLES = {"bigram": Head(0, 0), "presence": Head(0, 3), "prior": Head(1, 0), "decoy": Head(1, 1), "copy": Head(1, 2)}

# logit sizes (nats) that lm_head gives each role's signal
BIGRAM_LOGIT, COPY_LOGIT, PRIOR_LOGIT, PRESENCE_LOGIT = 6.0, 8.0, 2.0, 2.0
SINK_SCORE, MATCH_SCORE = 10.0, 30.0  # attention scores: <bos> (the default), a matching key

# Toy corpus: five users a side (the fewest that get a user-clustered CI), each with one sign-off, two 4-word
# profile items and a gold text.
PROFILE_POOL = ("we like the sun", "it was fun today", "i like the rain", "the park was fun", "we went to it",
                "i like a day", "the sun was fun", "we like the park", "a day and rain", "it was the sun",
                "i went to the", "we like a day")
GOLD_POOL = ("we went to the park", "i like the rain and the sun", "it was a fun day", "we like the park today",
             "i went to the park today", "it was fun")
INPUT = "write about a day"


def tokenizer() -> Any:
    """A word-level tokenizer over ``VOCAB`` (built in memory: nothing is read from disk)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<pad>")


@dataclass(frozen=True)
class User:
    """One user of the toy corpus: their sign-off, profile sentences and gold sentence."""

    user_id: str
    signoff: str
    profile: tuple[str, ...]  # 4-word sentences
    gold: str  # words only; the text is `gold -- signoff`

    @property
    def profile_block(self) -> str:
        return " ".join(f"profile {s} {CUE} {self.signoff}" for s in self.profile)

    @property
    def target(self) -> str:
        return f"{self.gold} {CUE} {self.signoff}"


def users(n_per_side: int = 5) -> tuple[list[User], list[User]]:
    """Discovery and evaluation users: within a side every user has their own sign-off."""
    sides = []
    for side in range(2):
        sides.append([User(f"{'de'[side]}{i}", SIGNOFFS[i % len(SIGNOFFS)],
                           (PROFILE_POOL[(2 * i + side) % len(PROFILE_POOL)],
                            PROFILE_POOL[(2 * i + side + 5) % len(PROFILE_POOL)]),
                           GOLD_POOL[(i + 3 * side) % len(GOLD_POOL)]) for i in range(n_per_side)])
    return sides[0], sides[1]


def prompt_text(profile_block: str | None) -> str:
    """``<bos> [profile block] input <input> answer``: the prompt the gold output continues."""
    body = f"input {INPUT} answer"
    return f"<bos> {profile_block} {body}" if profile_block else f"<bos> {body}"


def prompts_and_split(n_per_side: int = 5) -> tuple[dict[str, Prompt], Split]:
    """Every example's prompt variants (own / other user's / no profile; the donor is the next user on the same
    side, whose profile has the same token count) and the discovery/evaluation split of the examples."""
    prompts, sides = {}, []
    for side in users(n_per_side):
        examples = []
        for i, u in enumerate(side):
            donor = side[(i + 1) % len(side)]
            ex_id = f"{u.user_id}-0"
            prompts[ex_id] = Prompt(with_profile=prompt_text(u.profile_block), without_profile=prompt_text(None),
                                    target=" " + u.target, n_profile_items=len(u.profile), example_id=ex_id,
                                    user_id=u.user_id, chat=False, other_profile=prompt_text(donor.profile_block),
                                    other_user_id=donor.user_id)
            examples.append(Example(ex_id, u.user_id, INPUT, u.target,
                                    tuple(ProfileItem(f"{s} {CUE} {u.signoff}", position=k)
                                          for k, s in enumerate(u.profile)), task="known-answer", split="test"))
        sides.append(examples)
    return prompts, Split(sides[0], sides[1], seed=0, eval_fraction=0.5, by_user=True)


def bigram_successors() -> dict[str, set[str]]:
    """The toy grammar: every word's successors over the corpus's sentences (``profile``/``answer`` start one, ``--``
    ends one; nothing follows ``--``: only the copy head predicts a sign-off)."""
    succ: dict[str, set[str]] = {}
    discovery, evaluation = users()
    texts = [("profile " + s).split() + [CUE] for u in discovery + evaluation for s in u.profile]
    texts += [("answer " + u.gold).split() + [CUE] for u in discovery + evaluation]
    texts.append(("input " + INPUT + " answer").split())
    for words in texts:
        for a, b in zip(words, words[1:]):
            succ.setdefault(a, set()).add(b)
    return succ


@dataclass
class KnownAnswer:
    """The built model and what a test needs to know about it."""

    model: Any  # nnsight TransformersModel
    roles: dict[str, Head]  # role -> head
    prompts: dict[str, Prompt]  # example id -> its prompt variants
    split: Split

    @property
    def copy_head(self) -> Head:
        return self.roles["copy"]


def _head_slice(h: int) -> slice:
    return slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)


def _set_role(attn: torch.nn.Module, h: int, role: str, ids: dict[str, int]) -> None:
    """Write role ``role`` into head ``h`` of ``attn`` (q/k/v rows and o_proj columns of the head's slice).

    Scores are set in nats: ``q_proj`` is multiplied by sqrt(head_dim) to cancel the attention scaling."""
    q = torch.zeros(HEAD_DIM, HIDDEN)  # [head_dim, hidden]: the head's rows of q_proj (k_proj, v_proj alike)
    k = torch.zeros(HEAD_DIM, HIDDEN)
    v = torch.zeros(HEAD_DIM, HIDDEN)
    o = torch.zeros(HIDDEN, HEAD_DIM)  # [hidden, head_dim]: the head's columns of o_proj
    out = OUT[role]
    if role != "bigram":  # feature 0: every query scores <bos> SINK_SCORE, the default when nothing matches
        q[0, CONST] = SINK_SCORE
        k[0, TOK + ids["<bos>"]] = 1.0
    if role == "bigram":  # feature t: query token t matches key token t; the value is the current token's identity
        for t in range(len(VOCAB)):
            q[t, TOK + t] = MATCH_SCORE
            k[t, TOK + t] = 1.0
            v[t, TOK + t] = 1.0
            o[out + t, t] = WRITE
    elif role == "prior":  # always <bos>: a constant write
        v[0, TOK + ids["<bos>"]] = 1.0
        o[out, 0] = WRITE
    elif role == "presence":  # any `profile` marker beats <bos>
        q[1, CONST] = MATCH_SCORE
        k[1, TOK + ids["profile"]] = 1.0
        v[0, TOK + ids["profile"]] = 1.0
        o[out, 0] = WRITE
    elif role in ("copy", "decoy"):  # sign-off keys, from the cue only (copy) or from every query (decoy)
        q[1, (TOK + ids[CUE]) if role == "copy" else CONST] = MATCH_SCORE
        for s in SIGNOFFS:
            k[1, TOK + ids[s]] = 1.0
        for t in (ids[w] for w in SIGNOFFS + WORDS):  # the value is the attended token's identity (<bos>: 0)
            v[t, TOK + t] = 1.0
            o[(out + t) if role == "copy" else out, t] = WRITE
    else:
        raise ValueError(f"unknown role {role!r}")
    sl = _head_slice(h)
    with torch.no_grad():
        attn.q_proj.weight[sl] = q * math.sqrt(HEAD_DIM)
        attn.k_proj.weight[sl] = k
        attn.v_proj.weight[sl] = v
        attn.o_proj.weight[:, sl] = o


def build(roles: dict[str, Head] | None = None) -> KnownAnswer:
    """The known-answer model with ``roles`` (default ``ROLES``; drop ``"copy"`` for a model without the copy head,
    or move it to another head), its prompts and split."""
    from nnsight import TransformersModel
    from transformers import LlamaConfig, LlamaForCausalLM

    roles = dict(ROLES if roles is None else roles)
    if len(set(roles.values())) != len(roles):
        raise ValueError(f"two roles share a head: {roles}")
    tok = tokenizer()
    ids = {w: i for i, w in enumerate(VOCAB)}
    V = len(VOCAB)
    assert V <= CONST <= OUT["copy"] - 1 and OUT["copy"] + V <= OUT["bigram"] and OUT["bigram"] + V <= OUT["prior"]
    cfg = LlamaConfig(vocab_size=V, hidden_size=HIDDEN, intermediate_size=8, num_hidden_layers=N_LAYERS,
                      num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS, head_dim=HEAD_DIM,
                      max_position_embeddings=512, rms_norm_eps=1e-12, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "linear", "factor": 1e9, "rope_theta": 10000.0},
                      bos_token_id=ids["<bos>"], eos_token_id=None, pad_token_id=ids["<pad>"])
    hf = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    norm = math.sqrt(2 / HIDDEN)
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        emb = hf.model.embed_tokens.weight  # [V, D]
        emb[torch.arange(V), TOK + torch.arange(V)] = 1.0
        emb[:, CONST] = 1.0
        for module in hf.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.fill_(norm)
        for name, head in roles.items():
            _set_role(hf.model.layers[head.layer].self_attn, head.head, name, ids)
        W = hf.lm_head.weight  # [V, D]
        for word, nxt in bigram_successors().items():
            for n in nxt:
                W[ids[n], OUT["bigram"] + ids[word]] = BIGRAM_LOGIT / WRITE
        for t in range(V):
            W[t, OUT["copy"] + t] = COPY_LOGIT / WRITE
        for w in SIGNOFFS + WORDS:
            W[ids[w], OUT["prior"]] = PRIOR_LOGIT / WRITE
        W[ids[CUE], OUT["presence"]] = PRESENCE_LOGIT / WRITE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformersModel(hf, tokenizer=tok)
    prompts, split = prompts_and_split()
    return KnownAnswer(model, roles, prompts, split)
