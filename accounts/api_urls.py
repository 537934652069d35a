from django.urls import path

from . import api

urlpatterns = [
    path("access-settings/", api.AccessSettingsApi.as_view(), name="api_access_settings"),
    path("directory-groups/", api.DirectoryGroupsApi.as_view(), name="api_directory_groups"),
    path("users/<int:pk>/logout-everywhere/", api.LogoutEverywhereApi.as_view(), name="api_logout_everywhere"),
]
