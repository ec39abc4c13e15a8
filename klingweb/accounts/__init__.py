"""Teams, memberships, invitations, Kling credentials and the access helpers."""
