"""Projects: a team's cost centres; every job belongs to one."""
