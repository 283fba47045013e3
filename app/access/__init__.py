"""Who may spend on what: model access, size and batch caps per role or person, approvals."""
