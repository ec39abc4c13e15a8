"""URLs of elements_app: the library, create form, element pages, presets."""

from __future__ import annotations

from django.urls import path

from elements_app import views

urlpatterns = [
    path("t/<uuid:team>/elements/", views.element_list, name="elements-list"),
    path("t/<uuid:team>/elements/new/", views.element_create_view, name="elements-create"),
    path("t/<uuid:team>/elements/import/", views.element_import_view, name="elements-import"),
    path("t/<uuid:team>/elements/presets/", views.preset_list, name="elements-presets"),
    path("t/<uuid:team>/elements/presets/sync/", views.preset_sync, name="elements-presets-sync"),
    path("t/<uuid:team>/elements/<uuid:code>/", views.element_detail, name="elements-detail"),
    path("t/<uuid:team>/elements/<uuid:code>/card/", views.element_card, name="elements-card"),
    path(
        "t/<uuid:team>/elements/<uuid:code>/files/<slug:which>/",
        views.element_file,
        name="elements-file",
    ),
    path(
        "t/<uuid:team>/elements/<uuid:code>/delete/",
        views.element_delete_view,
        name="elements-delete",
    ),
]
