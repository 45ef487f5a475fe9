"""Personalization data: records, loaders (LongLaMP, offline corpora, custom JSONL, planted preferences), splits,
retrieval, prompts."""
from .records import DataError, Example, ProfileItem
from .planted import Planting, plant
from .registry import dataset_names, load_examples
from .splits import Split, assert_not_used_for_ranking, split_discovery_evaluation
from .retrieval import select_profile
from .prompts import Prompt, build_prompt, with_other_user, with_same_document

__all__ = [
    "DataError", "Example", "ProfileItem", "Planting", "plant", "dataset_names", "load_examples", "Split",
    "split_discovery_evaluation", "assert_not_used_for_ranking", "select_profile", "Prompt", "build_prompt",
    "with_other_user", "with_same_document",
]
