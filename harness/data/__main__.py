"""`python -m harness.data NAME [--split S] [--n N] [--profile-docs other|any] [--tokenizer]`: print a summary table
of a dataset."""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from typing import Callable, Sequence

from ..logs import cli
from .records import PROFILE_DOCS, DataError, Example
from .registry import dataset_names, load_examples


def _spread(values: Sequence[float]) -> str:
    """'min / median / max' of a list of numbers."""
    return f"{min(values):g} / {statistics.median(values):g} / {max(values):g}"


def summarize(examples: list[Example], count_tokens: Callable[[str], int]) -> list[tuple[str, str]]:
    """Rows of the summary table: users, examples, profile sizes, token lengths (min / median / max)."""
    by_user: dict[str, list[Example]] = {}
    for example in examples:
        by_user.setdefault(example.user_id, []).append(example)
    distinct = [len({item.text for e in group for item in e.profile}) for group in by_user.values()]
    items = {item.text for e in examples for item in e.profile}
    return [
        ("users", str(len(by_user))),
        ("examples", str(len(examples))),
        ("examples per user", _spread([len(g) for g in by_user.values()])),
        ("profile items per example", _spread([len(e.profile) for e in examples])),
        ("profile items per user (distinct)", _spread(distinct)),
        ("input tokens", _spread([count_tokens(e.input) for e in examples])),
        ("output tokens", _spread([count_tokens(e.output) for e in examples])),
        ("profile item tokens", _spread([count_tokens(text) for text in items])),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load the dataset and print its summary table."""
    parser = argparse.ArgumentParser(prog="python -m harness.data", description=__doc__)
    parser.add_argument("name", help=f"one of {', '.join(dataset_names())}, or a .json/.jsonl path")
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=None, help="seeded subset size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-docs", choices=PROFILE_DOCS, default="other",
                        help="profile items from the user's other documents only (default) or any")
    parser.add_argument("--tokenizer", action="store_true", help="count SmolLM2 tokens instead of whitespace words")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        examples = load_examples(args.name, args.split, n=args.n, seed=args.seed, profile_docs=args.profile_docs)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.tokenizer:
        from .prompts import load_smollm2_tokenizer

        tokenizer = load_smollm2_tokenizer()
        count, unit = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])), "SmolLM2 tokens"
    else:
        count, unit = (lambda text: len(text.split())), "whitespace tokens"
    rows = [("dataset", f"{args.name} [{args.split}]"), *summarize(examples, count), ("token unit", unit)]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    cli(lambda: sys.exit(main()))
