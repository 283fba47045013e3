"""Tests of the BFL client, the model catalogue and the webhook checks."""
