"""``python manage.py api_key create --team TEAM --user USERNAME --name LABEL [--read-only]``.

Creates a team API key acting for member ``USERNAME`` and prints it alone on the last line
(the only time it is shown). ``TEAM``: the team's code (UUID) or exact name. ``revoke
--team TEAM --prefix PREFIX`` revokes one; ``list --team TEAM`` lists them.
"""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from klingweb.accounts.models import Team
from klingweb.api.keys import api_key_create, api_key_revoke
from klingweb.api.models import ApiKey, ApiKeyScope


def _team(value: str) -> Team:
    try:
        return Team.objects.get(code=uuid.UUID(value))
    except (ValueError, Team.DoesNotExist):
        pass
    teams = list(Team.objects.filter(name=value)[:2])
    if len(teams) != 1:
        raise CommandError(f"No single team with code or name {value!r}.")
    return teams[0]


class Command(BaseCommand):
    """Create, list or revoke team API keys (see the module docstring)."""

    help = "Create (prints the key on the last line), list or revoke team API keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key; prints it on the last line.")
        create.add_argument("--team", required=True, help="Team code or exact name.")
        create.add_argument("--user", required=True, help="Username of the member it acts for.")
        create.add_argument("--name", required=True, help="A label for the key.")
        create.add_argument("--read-only", action="store_true", help="GET requests only.")
        listing = sub.add_parser("list", help="List a team's keys.")
        listing.add_argument("--team", required=True)
        revoke = sub.add_parser("revoke", help="Revoke a key by its prefix.")
        revoke.add_argument("--team", required=True)
        revoke.add_argument("--prefix", required=True, help="The 8 characters after kw_.")

    def handle(self, *args, **options):
        team = _team(options["team"])
        action = options["action"]
        if action == "create":
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user {options['user']!r}.")
            scope = ApiKeyScope.READ if options["read_only"] else ApiKeyScope.WRITE
            try:
                key, raw = api_key_create(team=team, user=user, name=options["name"], scope=scope)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(
                f"Created {key.get_scope_display().lower()} API key {key.name!r} of "
                f"{team.name} acting for {user.get_username()}. Shown once:"
            )
            self.stdout.write(raw)
        elif action == "list":
            for key in ApiKey.objects.filter(team=team).select_related("created_by"):
                state = "revoked" if key.revoked_at else "active"
                self.stdout.write(
                    f"kw_{key.prefix}_…{key.last4}\t{key.scope}\t{state}\t{key.name}\t"
                    f"{key.created_by.get_username()}\t{key.last_used_at or 'never used'}"
                )
        else:
            key = ApiKey.objects.filter(team=team, prefix=options["prefix"]).first()
            if key is None:
                raise CommandError(f"No key kw_{options['prefix']}_… in {team.name}.")
            done = api_key_revoke(api_key=key)
            self.stdout.write("Revoked." if done else "Already revoked.")
