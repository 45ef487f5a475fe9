"""Durable files, checkpoints, run folders and provenance: how a study writes, resumes and records its work."""
