"""Decoding, generation methods, steering vectors and the judge."""
