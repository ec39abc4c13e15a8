"""URLs of accounts: sign-in, teams, members, invitations, Kling credentials."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from klingweb.accounts import views

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="accounts/login.html"),
        name="accounts-login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="accounts-logout"),
]
