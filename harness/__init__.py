"""Preference-head study harness: heads, ablation, scoring, decoding, statistics, data."""

from .allocator import request_huge_pages

request_huge_pages()  # before any tensor exists: PyTorch reads it at its first CPU allocation (harness/allocator.py)

__version__ = "0.1.0"
