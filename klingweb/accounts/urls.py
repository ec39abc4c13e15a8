"""URLs of accounts: sign-in, teams, members, invitations, Kling credentials.

Public by design (no team in them): log in, log out, password reset, the invitation accept
page (its token is the key) and sign-up (404 unless ``ALLOW_SIGNUP``). Everything under
``/t/<team>/settings/`` goes through the access helpers.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from klingweb.accounts import views

urlpatterns = [
    path("", views.home, name="home"),
    # --- Sign-in (Django's auth views) ---
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="accounts-login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="accounts-logout"),
    path(
        "accounts/password/change/",
        views.ThrottledPasswordChangeView.as_view(
            template_name="registration/password_change_form.html",
            success_url=reverse_lazy("accounts-password-change-done"),
        ),
        name="accounts-password-change",
    ),
    path(
        "accounts/password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="registration/password_change_done.html"
        ),
        name="accounts-password-change-done",
    ),
    path(
        "accounts/password/reset/",
        views.ThrottledPasswordResetView.as_view(
            template_name="registration/password_reset_form.html",
            email_template_name="registration/password_reset_email.txt",
            subject_template_name="registration/password_reset_subject.txt",
            success_url=reverse_lazy("accounts-password-reset-done"),
        ),
        name="accounts-password-reset",
    ),
    path(
        "accounts/password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="registration/password_reset_done.html"
        ),
        name="accounts-password-reset-done",
    ),
    path(
        "accounts/password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="registration/password_reset_confirm.html",
            success_url=reverse_lazy("accounts-password-reset-complete"),
        ),
        name="accounts-password-reset-confirm",
    ),
    path(
        "accounts/password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="registration/password_reset_complete.html"
        ),
        name="accounts-password-reset-complete",
    ),
    path("accounts/signup/", views.signup, name="accounts-signup"),
    # --- Teams (not team-scoped) and invitations (public: the token is the key) ---
    path("accounts/teams/new/", views.team_create, name="accounts-team-create"),
    path(
        "accounts/invitations/<str:token>/",
        views.invitation_accept,
        name="accounts-invitation-accept",
    ),
    # --- Team settings (team-scoped) ---
    path("t/<uuid:team>/settings/", views.team_settings, name="accounts-settings"),
    path("t/<uuid:team>/settings/team/", views.team_update, name="accounts-team-update"),
    path("t/<uuid:team>/settings/leave/", views.team_leave, name="accounts-leave"),
    path(
        "t/<uuid:team>/settings/members/<uuid:member>/role/",
        views.member_role,
        name="accounts-member-role",
    ),
    path(
        "t/<uuid:team>/settings/members/<uuid:member>/remove/",
        views.member_remove,
        name="accounts-member-remove",
    ),
    path(
        "t/<uuid:team>/settings/invitations/",
        views.invitation_create,
        name="accounts-invitation-create",
    ),
    path(
        "t/<uuid:team>/settings/invitations/<uuid:invitation>/revoke/",
        views.invitation_revoke,
        name="accounts-invitation-revoke",
    ),
    path("t/<uuid:team>/settings/kling/new/", views.kling_create, name="accounts-kling-create"),
    path(
        "t/<uuid:team>/settings/kling/default/",
        views.kling_use_default,
        name="accounts-kling-use-default",
    ),
    path(
        "t/<uuid:team>/settings/kling/<uuid:account>/",
        views.kling_detail,
        name="accounts-kling-detail",
    ),
    path(
        "t/<uuid:team>/settings/kling/<uuid:account>/use/",
        views.kling_use,
        name="accounts-kling-use",
    ),
    path(
        "t/<uuid:team>/settings/kling/<uuid:account>/test/",
        views.kling_test,
        name="accounts-kling-test",
    ),
    path(
        "t/<uuid:team>/settings/kling/<uuid:account>/unpause/",
        views.kling_unpause,
        name="accounts-kling-unpause",
    ),
    path(
        "t/<uuid:team>/calls/<uuid:call>/",
        views.vendor_call_status,
        name="accounts-call-status",
    ),
]
