"""Durable files, checkpoints, run folders, provenance and logs."""
