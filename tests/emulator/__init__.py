"""Tests of the BFL emulator: its HTTP contract, failure modes, images and webhooks."""
