"""Scoring: sclite-compatible alignment and reports, and RESULTS.md."""
