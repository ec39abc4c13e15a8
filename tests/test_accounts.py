"""Accounts: sign-in, teams, members, invitations, Kling accounts, admin, secret rotation.

Every accounts URL is checked for the access rules (anonymous → login, outsider → 404, role
too weak → 403, wrong method → 405) by the parametrized ``SPECS`` tests; the behaviour of
each view, its HTMX variant and its refusals ("clear message, no change") follow.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts import services
from klingweb.accounts.models import (
    Invitation,
    KlingAccount,
    Membership,
    Region,
    Role,
    Team,
    VendorCall,
    VendorCallKind,
    VendorCallStatus,
)
from tests.conftest import PASSWORD, SANDBOX_AK, SANDBOX_SK, make_user
from tests.jobs_support import Jobs, closed_port_url, record_jobs

HX = {"HTTP_HX_REQUEST": "true"}
SECRET = "sk-very-secret-value-WXYZ"
User = get_user_model()


# --- Fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """A fast hasher: the default PBKDF2 makes each of the cast's five users cost ~0.7 s."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Things:
    """Objects of ``portal.team`` the URLs point at."""

    account: KlingAccount
    invitation: Invitation
    token: str
    member: Membership  # the plain member's membership
    other_account: KlingAccount  # of other_team
    call: VendorCall  # a "Test connection" started by the owner
    extra: dict = field(default_factory=dict)


@pytest.fixture
def things(portal) -> Things:
    account = KlingAccount(team=portal.team, name="Blue key", access_key="ak-blue")
    services.account_set_secret(account=account, secret_key=SECRET)
    account.save()
    owner_membership = Membership.objects.get(team=portal.team, user=portal.owner)
    invitation, token = services.invitation_create(
        team=portal.team, email="new@example.com", role=Role.MEMBER, actor=owner_membership
    )
    other = KlingAccount(team=portal.other_team, name="Red key", access_key="ak-red")
    services.account_set_secret(account=other, secret_key="sk-red-secret-0000")
    other.save()
    return Things(
        account=account,
        invitation=invitation,
        token=token,
        member=Membership.objects.get(team=portal.team, user=portal.member),
        other_account=other,
        call=VendorCall.objects.create(
            team=portal.team,
            kind=VendorCallKind.ACCOUNT_TEST,
            subject=str(account.code),
            created_by=portal.owner,
        ),
    )


@pytest.fixture
def jobs(monkeypatch, django_capture_on_commit_callbacks) -> Jobs:
    """Jobs the views enqueue, recorded; the test runs them (``Jobs.run``)."""
    return record_jobs(monkeypatch, django_capture_on_commit_callbacks)


def team_state(team: Team) -> tuple:
    """Everything an accounts view may change about a team, to assert "no change"."""
    team = Team.objects.get(pk=team.pk)
    return (
        team.name,
        team.time_zone,
        team.kling_account_id,
        sorted(Membership.objects.filter(team=team).values_list("user_id", "role")),
        sorted(
            Invitation.objects.filter(team=team).values_list(
                "email", "role", "accepted_at", "revoked_at"
            )
        ),
        sorted(
            KlingAccount.objects.filter(team=team).values_list(
                "name", "access_key", "secret_key_encrypted", "paused_at"
            )
        ),
    )


def msgs(response) -> list[str]:
    """The texts of the Django messages in a response's context."""
    return [str(m) for m in response.context["messages"]] if response.context else []


def role_of(team: Team, user) -> str | None:
    m = Membership.objects.filter(team=team, user=user).first()
    return m.role if m else None


# --- The access matrix --------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One URL: its name, the kwargs it needs, its methods and the least role per method."""

    name: str
    kwargs: tuple[str, ...]
    methods: dict[str, str]  # method → least role
    wrong: str  # a method the view refuses with 405

    def url(self, portal, things: Things) -> str:
        values = {
            "team": portal.team.code,
            "member": things.member.code,
            "invitation": things.invitation.code,
            "account": things.account.code,
            "call": things.call.code,
        }
        return reverse(self.name, kwargs={k: values[k] for k in self.kwargs})

    def __str__(self) -> str:
        return self.name


V, M, A = Role.VIEWER, Role.MEMBER, Role.ADMIN
SPECS = [
    Spec("accounts-settings", ("team",), {"GET": V}, "POST"),
    Spec("accounts-team-update", ("team",), {"POST": A}, "GET"),
    Spec("accounts-leave", ("team",), {"POST": V}, "GET"),
    Spec("accounts-member-role", ("team", "member"), {"POST": A}, "GET"),
    Spec("accounts-member-remove", ("team", "member"), {"POST": A}, "GET"),
    Spec("accounts-invitation-create", ("team",), {"POST": A}, "GET"),
    Spec("accounts-invitation-revoke", ("team", "invitation"), {"POST": A}, "GET"),
    Spec("accounts-kling-create", ("team",), {"GET": A, "POST": A}, "PUT"),
    Spec("accounts-kling-use-default", ("team",), {"POST": A}, "GET"),
    Spec("accounts-kling-detail", ("team", "account"), {"GET": A, "POST": A}, "PUT"),
    Spec("accounts-kling-use", ("team", "account"), {"POST": A}, "GET"),
    Spec("accounts-kling-test", ("team", "account"), {"POST": A}, "GET"),
    Spec("accounts-kling-unpause", ("team", "account"), {"POST": A}, "GET"),
    Spec("accounts-call-status", ("team", "call"), {"GET": A}, "POST"),
]
RANK = {V: 0, M: 1, A: 2, Role.OWNER: 3}


def _call(client, method: str, url: str, **extra):
    return client.generic(method, url, **extra)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_anonymous_is_sent_to_login(client, portal, things, spec, htmx):
    before = team_state(portal.team)
    for method in spec.methods:
        response = _call(client, method, spec.url(portal, things), **(HX if htmx else {}))
        assert response.status_code == 302, (method, response.status_code)
        assert response["Location"].startswith(reverse("accounts-login") + "?next=")
        if htmx:
            assert response["HX-Redirect"] == response["Location"]
    assert team_state(portal.team) == before


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_outsider_gets_404(client, portal, things, spec, htmx):
    client.force_login(portal.outsider)
    before = team_state(portal.team)
    for method in spec.methods:
        response = _call(client, method, spec.url(portal, things), **(HX if htmx else {}))
        assert response.status_code == 404, (method, response.status_code)
        assert portal.team.name not in response.content.decode()
    assert team_state(portal.team) == before


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_role_too_weak_gets_403(client, portal, things, spec):
    """Viewers writing, and members/viewers on admin views, are refused with no change."""
    before = team_state(portal.team)
    checked = 0
    for method, least in spec.methods.items():
        for user, role in ((portal.viewer, V), (portal.member, M)):
            if RANK[role] >= RANK[least]:
                continue
            client.force_login(user)
            response = _call(client, method, spec.url(portal, things))
            assert response.status_code == 403, (user, method, response.status_code)
            checked += 1
    assert team_state(portal.team) == before
    if spec.name in ("accounts-settings", "accounts-leave"):
        assert checked == 0  # every member may read settings and leave
    else:
        assert checked > 0


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_wrong_method_gets_405(client, portal, things, spec):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    response = _call(client, spec.wrong, spec.url(portal, things))
    assert response.status_code == 405
    assert set(response["Allow"].split(", ")) >= set(spec.methods)
    assert team_state(portal.team) == before


def test_the_specs_cover_every_team_scoped_accounts_url():
    from klingweb.accounts.urls import urlpatterns

    names = {p.name for p in urlpatterns if "<uuid:team>" in str(p.pattern)}
    assert names == {s.name for s in SPECS}


# --- Home, team creation, the switcher ----------------------------------------------------


def test_home_sends_a_member_to_their_team(client, portal):
    client.force_login(portal.member)
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("tasks-list", kwargs={"team": portal.team.code})


def test_home_without_team_offers_to_create_one(client, db):
    client.force_login(make_user("loner"))
    response = client.get(reverse("home"))
    assert response.status_code == 200
    assert "You are not in a team yet" in response.content.decode()
    assert reverse("accounts-team-create") in response.content.decode()


def test_home_anonymous_and_wrong_method(client, portal):
    assert client.get(reverse("home"))["Location"].startswith(reverse("accounts-login"))
    client.force_login(portal.member)
    assert client.post(reverse("home")).status_code == 405


def test_create_team_makes_the_creator_its_owner(client, db):
    user = make_user("founder")
    client.force_login(user)
    assert client.get(reverse("accounts-team-create")).status_code == 200
    response = client.post(
        reverse("accounts-team-create"), {"name": "  Green team ", "time_zone": "Asia/Tokyo"}
    )
    team = Team.objects.get(name="Green team")
    assert response["Location"] == reverse("accounts-settings", kwargs={"team": team.code})
    assert team.time_zone == "Asia/Tokyo"
    assert role_of(team, user) == Role.OWNER
    page = client.get(response["Location"])
    assert "Team Green team created" in page.content.decode()


def test_create_team_refuses_bad_input(client, db):
    client.force_login(make_user("founder"))
    response = client.post(
        reverse("accounts-team-create"), {"name": "  ", "time_zone": "Mars/Base"}
    )
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert "Choose a time zone from the list, e.g. Europe/Berlin." in response.content.decode()
    assert not Team.objects.filter(name="").exists()


def test_create_team_anonymous_and_wrong_method(client, db):
    url = reverse("accounts-team-create")
    assert client.get(url)["Location"].startswith(reverse("accounts-login"))
    assert client.post(url, {"name": "X"})["Location"].startswith(reverse("accounts-login"))
    assert not Team.objects.filter(name="X").exists()
    client.force_login(make_user("founder"))
    assert client.put(url).status_code == 405


def test_switcher_lists_only_my_teams(client, portal):
    client.force_login(portal.owner)
    page = client.get(reverse("accounts-settings", kwargs={"team": portal.team.code}))
    html = page.content.decode()
    assert "Blue team" in html and "Red team" not in html
    assert reverse("accounts-team-create") in html
    assert reverse("accounts-settings", kwargs={"team": portal.team.code}) in html


def test_two_people_in_two_teams_see_only_their_teams_pages(client, portal):
    blue = reverse("accounts-settings", kwargs={"team": portal.team.code})
    red = reverse("accounts-settings", kwargs={"team": portal.other_team.code})
    client.force_login(portal.owner)
    assert client.get(blue).status_code == 200
    assert client.get(red).status_code == 404
    assert (
        client.get(reverse("tasks-list", kwargs={"team": portal.other_team.code})).status_code
        == 404
    )
    client.force_login(portal.outsider)
    page = client.get(red)
    assert page.status_code == 200
    assert "Red team" in page.content.decode() and "Blue team" not in page.content.decode()
    assert "owner@example.com" not in page.content.decode()
    assert client.get(blue).status_code == 404


# --- Team settings ------------------------------------------------------------------------


def test_settings_page_for_owner_shows_every_section(client, portal, things):
    client.force_login(portal.owner)
    html = client.get(
        reverse("accounts-settings", kwargs={"team": portal.team.code})
    ).content.decode()
    for section in ('id="team-form"', 'id="members"', 'id="invitations"', 'id="kling-accounts"'):
        assert section in html
    assert "new@example.com" in html
    assert "Blue key" in html and "…WXYZ" in html
    assert SECRET not in html and things.account.secret_key_encrypted not in html


def test_settings_page_for_viewer_is_read_only(client, portal, things):
    client.force_login(portal.viewer)
    html = client.get(
        reverse("accounts-settings", kwargs={"team": portal.team.code})
    ).content.decode()
    assert 'id="members"' in html and "member@example.com" in html
    assert 'id="invitations"' not in html and 'id="kling-accounts"' not in html
    assert 'name="role"' not in html and "Remove" not in html
    assert "Leave team" in html


def test_team_update_renames_and_sets_time_zone(client, portal):
    client.force_login(portal.admin)
    url = reverse("accounts-team-update", kwargs={"team": portal.team.code})
    response = client.post(url, {"name": "Navy team", "time_zone": "Europe/Paris"}, follow=True)
    assert "Team settings saved." in msgs(response)
    team = Team.objects.get(pk=portal.team.pk)
    assert (team.name, team.time_zone) == ("Navy team", "Europe/Paris")


def test_the_time_zone_box_suggests_every_zone_as_the_person_types(client, portal):
    client.force_login(portal.admin)
    html = client.get(reverse("accounts-settings", kwargs={"team": portal.team.code})).content
    html = html.decode()
    box = re.search(r'<input[^>]*name="time_zone"[^>]*>', html).group(0)
    assert 'list="id_time_zone-options"' in box and 'type="text"' in box
    options = re.search(r'<datalist id="id_time_zone-options">(.*?)</datalist>', html, re.S)
    assert '<option value="Europe/Berlin">' in options.group(1)
    assert options.group(1).count("<option") > 400


def test_team_update_htmx_answers_the_section(client, portal):
    client.force_login(portal.owner)
    url = reverse("accounts-team-update", kwargs={"team": portal.team.code})
    response = client.post(url, {"name": "Navy team", "time_zone": "UTC"}, **HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section class="card" id="team-form">')
    assert "<html" not in html and "Team settings saved." in html


def test_team_update_refuses_bad_input(client, portal):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    url = reverse("accounts-team-update", kwargs={"team": portal.team.code})
    response = client.post(url, {"name": "", "time_zone": "Nowhere/City"}, **HX)
    html = response.content.decode()
    assert "This field is required." in html
    assert "Choose a time zone from the list, e.g. Europe/Berlin." in html
    assert team_state(portal.team) == before
    response = client.post(url, {"name": " ", "time_zone": "UTC"})
    assert "This field is required." in response.content.decode()
    assert "<h1>Blue team" in response.content.decode()
    assert team_state(portal.team) == before


# --- Members ------------------------------------------------------------------------------


def _role_url(portal, user, name="accounts-member-role"):
    m = Membership.objects.get(team=portal.team, user=user)
    return reverse(name, kwargs={"team": portal.team.code, "member": m.code})


def test_admin_changes_a_members_role(client, portal):
    client.force_login(portal.admin)
    response = client.post(_role_url(portal, portal.member), {"role": "viewer"}, follow=True)
    assert "member is now viewer." in msgs(response)
    assert role_of(portal.team, portal.member) == Role.VIEWER


def test_change_role_htmx_answers_the_members_section(client, portal):
    client.force_login(portal.owner)
    response = client.post(_role_url(portal, portal.viewer), {"role": "admin"}, **HX)
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="members">')
    assert "viewer is now admin." in html
    assert role_of(portal.team, portal.viewer) == Role.ADMIN


def test_admin_cannot_make_an_owner_or_touch_an_owner(client, portal):
    client.force_login(portal.admin)
    before = team_state(portal.team)
    response = client.post(_role_url(portal, portal.member), {"role": "owner"}, follow=True)
    assert "Choose one of the roles offered." in msgs(response)
    response = client.post(_role_url(portal, portal.owner), {"role": "viewer"}, follow=True)
    assert "Only an owner can change or remove another owner." in msgs(response)
    response = client.post(_role_url(portal, portal.owner, "accounts-member-remove"), follow=True)
    assert "Only an owner can change or remove another owner." in msgs(response)
    assert team_state(portal.team) == before


def test_last_owner_cannot_be_demoted(client, portal):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    response = client.post(_role_url(portal, portal.owner), {"role": "admin"}, **HX)
    assert "is the last owner of Blue team" in response.content.decode()
    assert team_state(portal.team) == before


def test_an_owner_steps_down_when_another_owner_exists(client, portal):
    client.force_login(portal.owner)
    client.post(_role_url(portal, portal.admin), {"role": "owner"})
    assert role_of(portal.team, portal.admin) == Role.OWNER
    response = client.post(_role_url(portal, portal.owner), {"role": "admin"}, **HX)
    assert response["HX-Redirect"] == reverse(
        "accounts-settings", kwargs={"team": portal.team.code}
    )
    assert role_of(portal.team, portal.owner) == Role.ADMIN


def test_admin_removes_a_member(client, portal):
    client.force_login(portal.admin)
    url = _role_url(portal, portal.member, "accounts-member-remove")
    response = client.post(url, follow=True)
    assert "member was removed from the team." in msgs(response)
    assert role_of(portal.team, portal.member) is None
    # The removed member no longer reaches the team.
    client.force_login(portal.member)
    assert (
        client.get(reverse("accounts-settings", kwargs={"team": portal.team.code})).status_code
        == 404
    )


def test_remove_member_htmx_answers_the_members_section(client, portal):
    client.force_login(portal.owner)
    response = client.post(_role_url(portal, portal.viewer, "accounts-member-remove"), **HX)
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="members">')
    assert "viewer was removed from the team." in html and "viewer@example.com" not in html


def test_remove_refuses_oneself_and_the_last_owner(client, portal):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    response = client.post(_role_url(portal, portal.owner, "accounts-member-remove"), follow=True)
    assert "To leave the team, use Leave team." in msgs(response)
    assert team_state(portal.team) == before
    # Service level: the last owner cannot be removed by anyone.
    actor = Membership.objects.get(team=portal.team, user=portal.owner)
    with pytest.raises(services.LastOwnerError):
        services.membership_remove(membership=actor, actor=actor)
    assert team_state(portal.team) == before


def test_member_leaves_the_team(client, portal):
    client.force_login(portal.viewer)
    response = client.post(
        reverse("accounts-leave", kwargs={"team": portal.team.code}), follow=True
    )
    assert "You left Blue team." in msgs(response)
    assert role_of(portal.team, portal.viewer) is None


def test_leave_htmx_redirects_the_whole_page(client, portal):
    client.force_login(portal.member)
    response = client.post(reverse("accounts-leave", kwargs={"team": portal.team.code}), **HX)
    assert response["HX-Redirect"] == reverse("home")
    assert role_of(portal.team, portal.member) is None


def test_last_owner_cannot_leave(client, portal):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    url = reverse("accounts-leave", kwargs={"team": portal.team.code})
    response = client.post(url, follow=True)
    assert any("is the last owner of Blue team" in m for m in msgs(response))
    response = client.post(url, **HX)
    assert "is the last owner of Blue team" in response.content.decode()
    assert team_state(portal.team) == before


# --- Invitations --------------------------------------------------------------------------

LINK = re.compile(r"http://testserver(/accounts/invitations/([\w-]+)/)")


def _invite(client, portal, email, role="member", **extra):
    url = reverse("accounts-invitation-create", kwargs={"team": portal.team.code})
    return client.post(url, {"email": email, "role": role}, **extra)


def _link_from_outbox(email: str) -> tuple[str, str]:
    message = [m for m in mail.outbox if m.to == [email]][-1]
    assert "Blue team" in message.subject
    path, token = LINK.search(message.body).groups()
    return path, token


def test_invitation_end_to_end_new_person(client, portal):
    client.force_login(portal.admin)
    response = _invite(client, portal, "Newbie@Example.com", "viewer", follow=True)
    assert "Invitation sent to Newbie@example.com as viewer." in msgs(response)
    path, token = _link_from_outbox("Newbie@example.com")
    invitation = Invitation.objects.get(team=portal.team, email="Newbie@example.com")
    # Only the SHA-256 of the token is stored.
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in invitation.token_hash
    assert invitation.expires_at - timezone.now() > timedelta(days=6, hours=23)

    client.logout()
    page = client.get(path)
    assert page.status_code == 200
    assert "Join Blue team" in page.content.decode() and "as viewer" in page.content.decode()
    response = client.post(
        path, {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response["Location"] == reverse("tasks-list", kwargs={"team": portal.team.code})
    user = User.objects.get(username="newbie")
    assert user.email == "Newbie@example.com" and user.check_password(PASSWORD)
    assert role_of(portal.team, user) == Role.VIEWER
    # Signed in as the new person.
    assert (
        client.get(reverse("accounts-settings", kwargs={"team": portal.team.code})).status_code
        == 200
    )
    invitation.refresh_from_db()
    assert invitation.accepted_by == user and invitation.status == "accepted"

    # Single use.
    client.logout()
    page = client.get(path)
    assert "This invitation has already been used." in page.content.decode()
    response = client.post(
        path, {"username": "second", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert "This invitation has already been used." in response.content.decode()
    assert not User.objects.filter(username="second").exists()


def test_invitation_end_to_end_existing_user(client, portal):
    client.force_login(portal.owner)
    _invite(client, portal, "outsider@example.com", "admin")
    path, _ = _link_from_outbox("outsider@example.com")
    client.force_login(portal.outsider)
    page = client.get(path)
    assert "Accept as outsider" in page.content.decode()
    response = client.post(path)
    assert response["Location"] == reverse("tasks-list", kwargs={"team": portal.team.code})
    assert role_of(portal.team, portal.outsider) == Role.ADMIN
    assert role_of(portal.other_team, portal.outsider) == Role.OWNER
    assert not User.objects.filter(username="").exists()


def test_invitation_anonymous_page_offers_sign_in_for_existing_users(client, portal, things):
    path = reverse("accounts-invitation-accept", kwargs={"token": things.token})
    html = client.get(path).content.decode()
    assert f"{reverse('accounts-login')}?next={path}" in html


def test_invitation_new_person_with_an_existing_email_must_sign_in(client, portal):
    client.force_login(portal.owner)
    _invite(client, portal, "outsider@example.com")
    path, _ = _link_from_outbox("outsider@example.com")
    client.logout()
    response = client.post(path, {"username": "dupe", "password1": PASSWORD, "password2": PASSWORD})
    assert "sign in with it, then accept the invitation" in response.content.decode()
    assert not User.objects.filter(username="dupe").exists()
    assert Invitation.objects.get(email="outsider@example.com").is_pending


def test_invitation_new_person_bad_password_changes_nothing(client, portal, things):
    path = reverse("accounts-invitation-accept", kwargs={"token": things.token})
    response = client.post(path, {"username": "newbie", "password1": PASSWORD, "password2": "x"})
    assert "The two password fields didn’t match." in response.content.decode()
    assert not User.objects.filter(username="newbie").exists()
    things.invitation.refresh_from_db()
    assert things.invitation.is_pending


def test_invitation_expired(client, portal, things):
    Invitation.objects.filter(pk=things.invitation.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    path = reverse("accounts-invitation-accept", kwargs={"token": things.token})
    assert "This invitation expired on" in client.get(path).content.decode()
    client.force_login(make_user("late"))
    response = client.post(path)
    assert "This invitation expired on" in response.content.decode()
    assert Membership.objects.filter(team=portal.team).count() == 4


def test_invitation_revoked_by_admin(client, portal, things):
    client.force_login(portal.admin)
    url = reverse(
        "accounts-invitation-revoke",
        kwargs={"team": portal.team.code, "invitation": things.invitation.code},
    )
    response = client.post(url, follow=True)
    assert "The invitation of new@example.com was revoked." in msgs(response)
    client.logout()
    path = reverse("accounts-invitation-accept", kwargs={"token": things.token})
    assert "This invitation was revoked." in client.get(path).content.decode()
    response = client.post(path, {"username": "n", "password1": PASSWORD, "password2": PASSWORD})
    assert "This invitation was revoked." in response.content.decode()
    assert not User.objects.filter(username="n").exists()
    # Revoking again: a clear message, no change.
    client.force_login(portal.admin)
    response = client.post(url, follow=True)
    assert "The invitation of new@example.com is no longer pending." in msgs(response)


def test_revoke_htmx_answers_the_invitations_section(client, portal, things):
    client.force_login(portal.owner)
    url = reverse(
        "accounts-invitation-revoke",
        kwargs={"team": portal.team.code, "invitation": things.invitation.code},
    )
    html = client.post(url, **HX).content.decode()
    assert html.lstrip().startswith('<section class="card" id="invitations">')
    assert "was revoked" in html and "badge-revoked" in html


def test_invitation_unknown_token(client, db):
    response = client.get(reverse("accounts-invitation-accept", kwargs={"token": "nope"}))
    assert "This invitation link is not valid." in response.content.decode()
    assert (
        client.put(reverse("accounts-invitation-accept", kwargs={"token": "x"})).status_code == 405
    )


def test_invitation_by_an_existing_member_changes_nothing(client, portal, things):
    client.force_login(portal.member)
    path = reverse("accounts-invitation-accept", kwargs={"token": things.token})
    response = client.post(path)
    assert "You are already a member of Blue team." in response.content.decode()
    assert role_of(portal.team, portal.member) == Role.MEMBER
    things.invitation.refresh_from_db()
    assert things.invitation.is_pending


def test_invite_refuses_bad_input(client, portal, things):
    client.force_login(portal.admin)
    before = team_state(portal.team)
    html = _invite(client, portal, "not-an-email", **HX).content.decode()
    assert "Enter a valid e-mail address" in html
    response = _invite(client, portal, "member@example.com", follow=True)
    assert "member@example.com is already a member of Blue team." in msgs(response)
    response = _invite(client, portal, "NEW@example.com", follow=True)
    assert any("already has a pending invitation" in m for m in msgs(response))
    html = _invite(client, portal, "boss@example.com", "owner", **HX).content.decode()
    assert "Select a valid choice" in html  # admins cannot invite owners
    assert team_state(portal.team) == before
    assert mail.outbox == []


def test_invite_htmx_answers_the_invitations_section(client, portal):
    client.force_login(portal.owner)
    html = _invite(client, portal, "boss@example.com", "owner", **HX).content.decode()
    assert html.lstrip().startswith('<section class="card" id="invitations">')
    assert "Invitation sent to boss@example.com as owner." in html
    assert len(mail.outbox) == 1


def test_invite_mail_failure_saves_nothing(client, portal, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # discard port: refused
    client.force_login(portal.owner)
    response = _invite(client, portal, "x@example.com", follow=True)
    assert any("could not be sent" in m for m in msgs(response))
    assert not Invitation.objects.filter(email="x@example.com").exists()


# --- Kling accounts -----------------------------------------------------------------------


def _kling_url(name, portal, account=None):
    kwargs = {"team": portal.team.code}
    if account is not None:
        kwargs["account"] = account.code
    return reverse(name, kwargs=kwargs)


def test_add_kling_account_stores_ciphertext_only(client, portal):
    client.force_login(portal.admin)
    assert client.get(_kling_url("accounts-kling-create", portal)).status_code == 200
    response = client.post(
        _kling_url("accounts-kling-create", portal),
        {
            "name": "Main",
            "credential_kind": "access_key",
            "region": "singapore",
            "access_key": "ak-1",
            "secret_key": SECRET,
        },
        follow=True,
    )
    account = KlingAccount.objects.get(team=portal.team, name="Main")
    assert "Kling account Main added. Test the connection, then use it for the team." in msgs(
        response
    )
    # Adding does not switch the team: the account is tested first.
    assert Team.objects.get(pk=portal.team.pk).kling_account is None
    assert SECRET not in account.secret_key_encrypted
    assert services.secret_decrypt(account.secret_key_encrypted) == SECRET
    assert account.secret_key_last4 == "WXYZ"
    assert account.base_url == "https://api-singapore.klingai.com"
    # Never rendered back: not on the account page, not on the settings page.
    for url in (
        response.redirect_chain[-1][0],
        reverse("accounts-settings", kwargs={"team": portal.team.code}),
    ):
        html = client.get(url).content.decode()
        assert "…WXYZ" in html
        assert SECRET not in html and account.secret_key_encrypted not in html


def test_add_kling_account_refuses_bad_input(client, portal):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    response = client.post(
        _kling_url("accounts-kling-create", portal),
        {
            "name": "X",
            "credential_kind": "access_key",
            "region": "custom",
            "access_key": "ak",
            "secret_key": SECRET,
        },
    )
    html = response.content.decode()
    assert "The custom region needs a base URL." in html
    assert SECRET not in html  # the secret is not echoed back
    response = client.post(
        _kling_url("accounts-kling-create", portal),
        {
            "name": "X",
            "credential_kind": "access_key",
            "region": "custom",
            "custom_base_url": "ftp://example.com",
            "access_key": "ak",
        },
    )
    html = response.content.decode()
    assert "Use an http:// or https:// URL with a host." in html
    assert "Enter the secret key." in html
    assert team_state(portal.team) == before


def test_custom_base_url_must_be_allowed_by_the_operator(client, portal, settings):
    """A team admin cannot point the server at an arbitrary URL (it is called with a
    signed token); the operator allows URLs with KLING_CUSTOM_BASE_URLS."""
    client.force_login(portal.owner)
    settings.KLING_CUSTOM_BASE_URLS = ["https://kling-proxy.example.com"]
    before = team_state(portal.team)
    data = {
        "name": "X",
        "credential_kind": "access_key",
        "region": "custom",
        "access_key": "ak",
        "secret_key": SECRET,
    }
    response = client.post(
        _kling_url("accounts-kling-create", portal),
        {**data, "custom_base_url": "http://169.254.169.254/latest"},
    )
    assert "This base URL is not allowed here" in response.content.decode()
    assert team_state(portal.team) == before
    response = client.post(
        _kling_url("accounts-kling-create", portal),
        {**data, "custom_base_url": "https://kling-proxy.example.com/"},
    )
    assert response.status_code == 302
    assert portal.team.kling_accounts.get().base_url == "https://kling-proxy.example.com"


def test_edit_kling_account_keeps_or_replaces_the_secret(client, portal, things):
    client.force_login(portal.owner)
    url = _kling_url("accounts-kling-detail", portal, things.account)
    html = client.get(url).content.decode()
    assert "…WXYZ" in html and SECRET not in html
    old = things.account.secret_key_encrypted
    client.post(
        url,
        {
            "name": "Renamed",
            "credential_kind": "access_key",
            "region": "beijing",
            "access_key": "ak-blue",
        },
    )
    things.account.refresh_from_db()
    assert things.account.name == "Renamed" and things.account.secret_key_encrypted == old
    assert things.account.base_url == "https://api-beijing.klingai.com"
    client.post(
        url,
        {
            "name": "Renamed",
            "credential_kind": "access_key",
            "region": "beijing",
            "access_key": "ak-blue",
            "secret_key": "n3w-ABCD",
        },
    )
    things.account.refresh_from_db()
    assert services.secret_decrypt(things.account.secret_key_encrypted) == "n3w-ABCD"
    assert things.account.secret_key_last4 == "ABCD"


def test_use_account_and_back_to_operator_default(client, portal, things):
    client.force_login(portal.admin)
    response = client.post(
        _kling_url("accounts-kling-use", portal, things.account), {"confirm": "1"}, follow=True
    )
    assert "The team now uses Blue key." in msgs(response)
    assert Team.objects.get(pk=portal.team.pk).kling_account == things.account
    html = client.post(_kling_url("accounts-kling-use-default", portal), **HX).content.decode()
    assert html.lstrip().startswith('<section class="card" id="kling-accounts">')
    assert "The team now uses the operator&#x27;s account." in html
    assert Team.objects.get(pk=portal.team.pk).kling_account is None


def test_use_htmx_answers_the_kling_section(client, portal, things):
    client.force_login(portal.owner)
    html = client.post(
        _kling_url("accounts-kling-use", portal, things.account), {"confirm": "1"}, **HX
    ).content.decode()
    assert html.lstrip().startswith('<section class="card" id="kling-accounts">')
    assert "The team now uses Blue key." in html


def test_another_teams_account_is_404(client, portal, things):
    client.force_login(portal.owner)
    before = team_state(portal.team)
    for name in ("accounts-kling-use", "accounts-kling-test", "accounts-kling-unpause"):
        assert client.post(_kling_url(name, portal, things.other_account)).status_code == 404
    assert not VendorCall.objects.filter(subject=str(things.other_account.code)).exists()
    assert (
        client.get(_kling_url("accounts-kling-detail", portal, things.other_account)).status_code
        == 404
    )
    assert team_state(portal.team) == before


def _pause(account: KlingAccount) -> None:
    KlingAccount.objects.filter(pk=account.pk).update(
        paused_at=timezone.now(),
        paused_code=1102,
        paused_message="resource pack exhausted",
        paused_request_id="req-1",
    )


def test_clear_pause(client, portal, things):
    _pause(things.account)
    client.force_login(portal.admin)
    html = client.get(_kling_url("accounts-kling-detail", portal, things.account)).content.decode()
    assert "Kling answered code 1102" in html and "req-1" in html
    response = client.post(
        _kling_url("accounts-kling-unpause", portal, things.account), follow=True
    )
    assert any("pause of Blue key was cleared" in m for m in msgs(response))
    things.account.refresh_from_db()
    assert not things.account.is_paused and things.account.paused_code is None
    response = client.post(
        _kling_url("accounts-kling-unpause", portal, things.account), follow=True
    )
    assert "Blue key was not paused." in msgs(response)


def test_clear_pause_htmx_answers_the_kling_section(client, portal, things):
    _pause(things.account)
    client.force_login(portal.owner)
    html = client.post(
        _kling_url("accounts-kling-unpause", portal, things.account), **HX
    ).content.decode()
    assert html.lstrip().startswith('<section class="card" id="kling-accounts">')
    assert "was cleared" in html and "paused (1102)" not in html


@pytest.fixture
def sandbox_account(portal, kling_settings, fresh_sandbox) -> KlingAccount:
    account = KlingAccount(
        team=portal.team,
        name="Sandbox",
        region=Region.CUSTOM,
        custom_base_url=fresh_sandbox.base_url,
        access_key=SANDBOX_AK,
    )
    services.account_set_secret(account=account, secret_key=SANDBOX_SK)
    account.save()
    return account


def _status_url(portal, call: VendorCall) -> str:
    return reverse("accounts-call-status", kwargs={"team": portal.team.code, "call": call.code})


def _only_call() -> VendorCall:
    return VendorCall.objects.get(kind=VendorCallKind.ACCOUNT_TEST)


def test_connection_test_answers_at_once_then_shows_resource_packs(
    client, portal, sandbox_account, fresh_sandbox, jobs
):
    client.force_login(portal.admin)
    detail = _kling_url("accounts-kling-detail", portal, sandbox_account)
    # Kling answers slowly: the request must not wait for it.
    fresh_sandbox.config.latency = 2.0
    started = time.monotonic()
    response = jobs.post(client, _kling_url("accounts-kling-test", portal, sandbox_account))
    assert time.monotonic() - started < 1.5
    fresh_sandbox.config.latency = 0.0
    assert response.status_code == 302 and response["Location"] == detail
    assert jobs.names() == ["klingweb.accounts.jobs.connection_test"]
    call = _only_call()
    assert call.status == VendorCallStatus.PENDING and call.created_by == portal.admin

    waiting = client.get(detail).content.decode()
    assert "Working…" in waiting and 'hx-trigger="every 1s"' in waiting
    assert _status_url(portal, call) in waiting
    assert "Sandbox video pack" not in waiting  # nothing asked of Kling yet

    assert jobs.run() == [VendorCallStatus.DONE]
    html = client.get(detail).content.decode()
    assert "Connected." in html and "Sandbox video pack" in html
    assert "hx-trigger" not in html  # finished: the page stops polling
    assert SANDBOX_SK not in html and sandbox_account.secret_key_encrypted not in html


def test_connection_test_htmx_answers_the_result_section_which_polls_until_done(
    client, portal, sandbox_account, jobs
):
    client.force_login(portal.owner)
    response = jobs.post(client, _kling_url("accounts-kling-test", portal, sandbox_account), **HX)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="test-result"')
    assert "<html" not in html and "Working…" in html
    call = _only_call()
    status = _status_url(portal, call)
    assert f'hx-get="{status}"' in html and 'hx-trigger="every 1s"' in html

    polled = client.get(status, **HX).content.decode()
    assert "<html" not in polled and "Working…" in polled and "every 1s" in polled
    jobs.run()
    polled = client.get(status, **HX).content.decode()
    assert "<html" not in polled and "Sandbox video pack" in polled
    assert "hx-trigger" not in polled and "hx-get" not in polled
    # Without HTMX the status URL is a page of its own.
    assert "<html" in client.get(status).content.decode()


def test_connection_test_shows_the_vendors_error(client, portal, sandbox_account, jobs):
    services.account_set_secret(account=sandbox_account, secret_key="wrong-secret-9999")
    sandbox_account.save()
    client.force_login(portal.owner)
    html = jobs.post(
        client, _kling_url("accounts-kling-test", portal, sandbox_account), **HX
    ).content.decode()
    assert "Working…" in html and "1002" not in html
    jobs.run()
    call = _only_call()
    assert call.status == VendorCallStatus.FAILED and call.error_code == 1002
    html = client.get(_status_url(portal, call), **HX).content.decode()
    assert "Kling refused the request." in html
    assert "Code 1002 (HTTP 401)" in html and "signature check failed" in html
    assert f"request_id: <code>{call.error_request_id}</code>" in html and call.error_request_id
    assert "wrong-secret-9999" not in html and "hx-trigger" not in html


def test_connection_test_with_kling_down_shows_a_network_error(client, portal, jobs):
    account = KlingAccount(
        team=portal.team,
        name="Down",
        region=Region.CUSTOM,
        custom_base_url=closed_port_url(),
        access_key="ak-down",
    )
    services.account_set_secret(account=account, secret_key="sk-down-0000")
    account.save()
    client.force_login(portal.admin)
    response = jobs.post(client, _kling_url("accounts-kling-test", portal, account), **HX)
    assert response.status_code == 200 and "Working…" in response.content.decode()
    jobs.run()
    html = client.get(_kling_url("accounts-kling-detail", portal, account)).content.decode()
    assert "Could not reach Kling (network error)." in html
    assert "Kling refused" not in html


def test_connection_test_unreadable_secret(client, portal, things, jobs):
    KlingAccount.objects.filter(pk=things.account.pk).update(secret_key_encrypted="garbage")
    things.call.delete()
    client.force_login(portal.owner)
    jobs.post(client, _kling_url("accounts-kling-test", portal, things.account))
    jobs.run()
    html = client.get(_kling_url("accounts-kling-detail", portal, things.account)).content.decode()
    assert "cannot be decrypted; re-enter it" in html


def test_a_second_click_shows_the_pending_test_instead_of_starting_another(
    client, portal, sandbox_account, jobs
):
    client.force_login(portal.admin)
    url = _kling_url("accounts-kling-test", portal, sandbox_account)
    first = jobs.post(client, url, **HX).content.decode()
    second = jobs.post(client, url, **HX).content.decode()
    call = _only_call()  # one call, not two
    assert f'id="call-{call.code}"' in first and f'id="call-{call.code}"' in second
    assert jobs.names() == ["klingweb.accounts.jobs.connection_test"]


def test_a_test_whose_job_died_shows_its_age_and_can_be_started_again(
    client, portal, sandbox_account, jobs
):
    old = VendorCall.objects.create(
        team=portal.team,
        kind=VendorCallKind.ACCOUNT_TEST,
        subject=str(sandbox_account.code),
        created_by=portal.admin,
        created_at=timezone.now() - timedelta(minutes=10),
    )
    client.force_login(portal.admin)
    detail = _kling_url("accounts-kling-detail", portal, sandbox_account)
    html = client.get(detail).content.decode()
    assert "no answer 10\xa0minutes after it was started" in html
    assert "You can start it again." in html and "hx-trigger" not in html

    jobs.post(client, _kling_url("accounts-kling-test", portal, sandbox_account))
    old.refresh_from_db()
    assert old.status == VendorCallStatus.FAILED and old.error_kind == "abandoned"
    new = VendorCall.objects.exclude(pk=old.pk).get()
    assert new.status == VendorCallStatus.PENDING
    jobs.run()
    assert "Sandbox video pack" in client.get(detail).content.decode()
    # The dead job, delivered late, does nothing to the abandoned call.
    from klingweb.accounts.jobs import connection_test

    assert connection_test(old.pk) == "skipped"
    old.refresh_from_db()
    assert old.error_kind == "abandoned"


def test_a_test_job_runs_once(client, portal, sandbox_account, jobs):
    from klingweb.accounts.jobs import connection_test

    client.force_login(portal.admin)
    jobs.post(client, _kling_url("accounts-kling-test", portal, sandbox_account))
    call = _only_call()
    assert connection_test(call.pk) == VendorCallStatus.DONE
    finished = VendorCall.objects.get(pk=call.pk).finished_at
    assert connection_test(call.pk) == "skipped"  # a second delivery claims nothing
    assert VendorCall.objects.get(pk=call.pk).finished_at == finished


def test_call_status_of_another_teams_call_is_404(client, portal, things):
    other = VendorCall.objects.create(team=portal.other_team, kind=VendorCallKind.ACCOUNT_TEST)
    client.force_login(portal.owner)
    url = reverse("accounts-call-status", kwargs={"team": portal.team.code, "call": other.code})
    assert client.get(url).status_code == 404


# --- Secret rotation ----------------------------------------------------------------------


def test_rotate_kling_secrets_reencrypts_with_the_newest_key(settings, things, capsys):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FERNET_KEYS = [old_key]
    services.account_set_secret(account=things.account, secret_key=SECRET)
    things.account.save()
    before = things.account.secret_key_encrypted
    KlingAccount.objects.filter(pk=things.other_account.pk).update(secret_key_encrypted="")

    settings.FERNET_KEYS = [new_key, old_key]
    call_command("rotate_kling_secrets")
    assert "Re-encrypted 1 secret key(s)" in capsys.readouterr().out
    things.account.refresh_from_db()
    assert things.account.secret_key_encrypted != before
    settings.FERNET_KEYS = [new_key]  # the old key is dropped: still readable
    assert services.secret_decrypt(things.account.secret_key_encrypted) == SECRET


def test_rotate_kling_secrets_reports_unreadable_secrets(settings, things, capsys):
    settings.FERNET_KEYS = [Fernet.generate_key().decode()]  # neither row can be read
    with pytest.raises(CommandError, match="2 secret key"):
        call_command("rotate_kling_secrets")
    err = capsys.readouterr().err
    assert "Blue key" in err and SECRET not in err


# --- Sign-in, password change and reset, sign-up ------------------------------------------


def test_login_and_logout(client, portal):
    page = client.get(reverse("accounts-login"))
    assert page.status_code == 200 and reverse("accounts-password-reset") in page.content.decode()
    response = client.post(reverse("accounts-login"), {"username": "member", "password": "bad"})
    assert response.status_code == 200
    assert "Please enter a correct username" in response.content.decode()
    response = client.post(reverse("accounts-login"), {"username": "member", "password": PASSWORD})
    assert response["Location"] == reverse("home")
    assert client.get(reverse("accounts-logout")).status_code == 405
    response = client.post(reverse("accounts-logout"))
    assert response["Location"] == reverse("accounts-login")
    assert client.get(reverse("home"))["Location"].startswith(reverse("accounts-login"))


def test_password_change(client, portal):
    url = reverse("accounts-password-change")
    assert client.get(url)["Location"].startswith(reverse("accounts-login"))
    client.force_login(portal.member)
    assert client.get(url).status_code == 200
    new = "another-long-passphrase-77"
    response = client.post(
        url, {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert response["Location"] == reverse("accounts-password-change-done")
    portal.member.refresh_from_db()
    assert portal.member.check_password(new)


def test_password_reset_by_email(client, portal):
    response = client.post(reverse("accounts-password-reset"), {"email": "viewer@example.com"})
    assert response["Location"] == reverse("accounts-password-reset-done")
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/\S+/)", mail.outbox[0].body)[1]
    response = client.get(link)  # redirects to the set-password URL (token in the session)
    set_url = response["Location"]
    new = "reset-passphrase-that-is-long-8"
    response = client.post(set_url, {"new_password1": new, "new_password2": new})
    assert response["Location"] == reverse("accounts-password-reset-complete")
    portal.viewer.refresh_from_db()
    assert portal.viewer.check_password(new)
    # Used once: the link no longer works.
    assert "This link cannot be used" in client.get(link, follow=True).content.decode()


def test_signup_is_closed_by_default(client, db):
    assert client.get(reverse("accounts-signup")).status_code == 404
    assert client.post(reverse("accounts-signup"), {"username": "x"}).status_code == 404
    assert "Sign up" not in client.get(reverse("accounts-login")).content.decode()


def test_signup_when_allowed(client, db, settings):
    settings.ALLOW_SIGNUP = True
    assert "Sign up" in client.get(reverse("accounts-login")).content.decode()
    data = {"username": "fresh", "email": "bad", "password1": PASSWORD, "password2": PASSWORD}
    assert (
        "Enter a valid e-mail address"
        in client.post(reverse("accounts-signup"), data).content.decode()
    )
    data["email"] = "fresh@example.com"
    response = client.post(reverse("accounts-signup"), data)
    assert response["Location"] == reverse("home")
    assert User.objects.get(username="fresh").email == "fresh@example.com"
    assert client.get(reverse("accounts-signup"))["Location"] == reverse("home")


# --- Django admin -------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", PASSWORD))
    return client


def test_admin_lists_every_accounts_model(staff_client, portal, things):
    for model in ("team", "membership", "invitation", "klingaccount", "vendorcall"):
        response = staff_client.get(reverse(f"admin:accounts_{model}_changelist"))
        assert response.status_code == 200, model
        html = response.content.decode()
        assert SECRET not in html and things.account.secret_key_encrypted not in html
    html = staff_client.get(reverse("admin:accounts_klingaccount_changelist")).content.decode()
    assert "…WXYZ" in html
    html = staff_client.get(
        reverse("admin:accounts_invitation_changelist") + "?status=pending"
    ).content.decode()
    assert "new@example.com" in html and things.invitation.token_hash not in html


def test_admin_kling_account_page_never_shows_the_secret(staff_client, portal, things):
    url = reverse("admin:accounts_klingaccount_change", args=[things.account.pk])
    html = staff_client.get(url).content.decode()
    assert "…WXYZ" in html
    assert SECRET not in html and things.account.secret_key_encrypted not in html
    assert 'name="secret_key_encrypted"' not in html


def test_admin_adds_a_kling_account_with_an_encrypted_secret(staff_client, portal):
    response = staff_client.post(
        reverse("admin:accounts_klingaccount_add"),
        {
            "name": "Admin-made",
            "team": portal.team.pk,
            "region": "singapore",
            "custom_base_url": "",
            "access_key": "ak-x",
            "new_secret_key": "admin-secret-QRST",
            "created_at_0": "2025-01-01",
            "created_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    account = KlingAccount.objects.get(name="Admin-made")
    assert "admin-secret-QRST" not in account.secret_key_encrypted
    assert services.secret_decrypt(account.secret_key_encrypted) == "admin-secret-QRST"


def test_admin_actions_clear_pause_and_revoke(staff_client, portal, things):
    _pause(things.account)
    staff_client.post(
        reverse("admin:accounts_klingaccount_changelist"),
        {"action": "clear_pause", "_selected_action": [things.account.pk]},
    )
    things.account.refresh_from_db()
    assert not things.account.is_paused
    staff_client.post(
        reverse("admin:accounts_invitation_changelist"),
        {"action": "revoke", "_selected_action": [things.invitation.pk]},
    )
    things.invitation.refresh_from_db()
    assert things.invitation.status == "revoked"
