"""Preference-head study harness: heads, ablation, scoring, decoding, statistics, data."""

__version__ = "0.1.0"
