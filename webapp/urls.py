from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from labeling.views import people as people_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="labeling:home", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The one-time link a person added by an admin sets their password with (labeling.services.people).
    path("accounts/invite/<str:token>/", people_views.accept_invite, name="invite"),
    path("label/", include("labeling.urls")),
    path("training/", include("training.urls")),
    path("api/", include("labeling.api.urls")),
    path("api/", include("training.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as its own response (`?script=`) rather than inline, and
    # our template links a stylesheet instead of an inline <style>: the page runs under the CSP in settings.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
]
