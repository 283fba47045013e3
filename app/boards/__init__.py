"""Boards: named collections of the team's images, shared by everyone in the team."""
