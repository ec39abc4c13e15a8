"""`manage.py demo_data`: create the demo company once — two teams and four people.

Idempotent: rows are looked up by username and team name and created only when missing;
an existing user's password and roles are never changed. Prints the sign-in details.

The company "Acme Pictures" has two teams, ``Acme Studio`` and ``Acme Marketing``:

- ``studio-owner``: owner of Acme Studio, and staff + superuser (company usage, /admin/);
- ``studio-member``: member of Acme Studio (creates tasks and elements);
- ``studio-viewer``: viewer of Acme Studio (reads, cannot create);
- ``marketing-owner``: owner of Acme Marketing (sees nothing of Acme Studio).

The password is ``--password``, else ``$DEMO_PASSWORD`` (``make run`` keeps one in ``.env``),
else a random one generated now and printed.

Demo users belong to sandbox mode only (``make run`` runs this command only then).
``--deactivate`` (what ``make run`` runs with real Kling credentials) creates nothing and
marks demo users left from a sandbox run inactive, so their known password opens nothing;
a later sandbox run activates them again.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandParser


@dataclass(frozen=True)
class DemoUser:
    """One demo person: username, team name, role value, and whether staff/superuser."""

    username: str
    team: str
    role: str
    staff: bool = False

    @property
    def describe(self) -> str:
        """One line for the sign-in table, e.g. ``owner of Acme Studio (staff)``."""
        extra = " · staff: company usage and /admin/" if self.staff else ""
        return f"{self.role} of {self.team}{extra}"


STUDIO = "Acme Studio"
MARKETING = "Acme Marketing"
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("studio-owner", STUDIO, "owner", staff=True),
    DemoUser("studio-member", STUDIO, "member"),
    DemoUser("studio-viewer", STUDIO, "viewer"),
    DemoUser("marketing-owner", MARKETING, "owner"),
)


class Command(BaseCommand):
    """Create the demo teams and users if missing; print who can sign in."""

    help = "Create the demo company (two teams; an owner in each, a member and a viewer) once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", help="Password for new demo users ($DEMO_PASSWORD).")
        parser.add_argument(
            "--deactivate",
            action="store_true",
            help="Create nothing; mark existing demo users inactive (real Kling credentials).",
        )

    def handle(self, *args, **options) -> None:
        from django.contrib.auth import get_user_model
        from django.db import transaction

        from klingweb.accounts.models import Membership, Team
        from klingweb.accounts.services import team_settings_touch

        user_model = get_user_model()
        names = [demo.username for demo in DEMO_USERS]
        if options["deactivate"]:
            count = user_model.objects.filter(username__in=names, is_active=True).update(
                is_active=False
            )
            if count and options["verbosity"] >= 1:
                self.stdout.write(
                    f"Deactivated {count} demo user(s) left from sandbox mode "
                    "(demo users are for the sandbox only)."
                )
            return
        # Back in sandbox mode: demo users deactivated by a real-credentials run sign in again.
        user_model.objects.filter(username__in=names, is_active=False).update(is_active=True)

        password = options["password"] or os.environ.get("DEMO_PASSWORD", "").strip()
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        created: list[str] = []
        with transaction.atomic():
            teams = {}
            for name in (STUDIO, MARKETING):
                team = Team.objects.filter(name=name).order_by("created_at", "pk").first()
                if team is None:
                    team = Team.objects.create(name=name)
                    created.append(f"team {name}")
                teams[name] = team
            for demo in DEMO_USERS:
                user = user_model.objects.filter(username=demo.username).first()
                if user is None:
                    user = user_model.objects.create_user(
                        username=demo.username,
                        email=f"{demo.username}@example.com",
                        password=password,
                        is_staff=demo.staff,
                        is_superuser=demo.staff,
                    )
                    created.append(f"user {demo.username}")
                _, made = Membership.objects.get_or_create(
                    user=user, team=teams[demo.team], defaults={"role": demo.role}
                )
                if made:
                    created.append(f"{demo.username} → {demo.team}")
                    # A team's members are part of what its cached usage page shows.
                    team_settings_touch(team_ids=[teams[demo.team].pk])
        if options["verbosity"] < 1:
            return
        if created:
            self.stdout.write("Demo data created: " + ", ".join(created) + ".")
        else:
            self.stdout.write("Demo data already present; nothing changed.")
        known = user_model.objects.filter(username=DEMO_USERS[0].username).first()
        if known is not None and not known.check_password(password):
            self.stdout.write(
                "Note: the demo users keep the password they were created with "
                "(it differs from the one given now)."
            )
            return
        self.stdout.write(f"Demo sign-in: password {password!r} for:")
        for demo in DEMO_USERS:
            self.stdout.write(f"  {demo.username:<16} {demo.describe}")
        if generated:
            self.stdout.write("(generated now; pass --password or set DEMO_PASSWORD to choose)")
