"""Tests that run the studio as several hosts on one machine."""
