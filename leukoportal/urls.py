from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", views.RateLimitedLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", views.SchemaView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("api/", include("annotations.api_urls")),
    path("api/", include("classifier.api_urls")),
    path("api/", include("slides.api_urls")),
    path("api/", include("reports.api_urls")),
    path("api/", include("sources.api_urls")),
    path("api/", include("competency.api_urls")),
    path("api/", include("lis.api_urls")),
    path("api/", include("accounts.api_urls")),
    path("", include("annotations.urls")),
    path("models/", include("classifier.urls")),
    path("slides/", include("slides.urls")),
    path("reports/", include("reports.urls")),
    path("sources/", include("sources.urls")),
    path("competency/", include("competency.urls")),
    path("lis/", include("lis.urls")),
    path("access/", include("accounts.urls")),
]
