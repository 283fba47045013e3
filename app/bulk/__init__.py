"""Bulk work on many images at once: pick them (or every one a filter matches) and act."""
