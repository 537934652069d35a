from django.urls import path

from . import api

urlpatterns = [
    path("sources/", api.SourceListApi.as_view(), name="api_sources"),
    path("sources/create/", api.SourceCreateApi.as_view(), name="api_source_create"),
    path("sources/<int:pk>/", api.SourceUpdateApi.as_view(), name="api_source_update"),
]
