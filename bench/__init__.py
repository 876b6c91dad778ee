"""The performance harness: figures, not pass/fail. Run ``python -m bench`` (see README.md)."""
