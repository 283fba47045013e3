"""The audit log: an append-only record of every admin and manager action."""
