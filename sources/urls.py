from django.urls import path

from . import views

app_name = "sources"
urlpatterns = [
    path("", views.source_list, name="list"),
    path("<int:pk>/", views.source_update, name="update"),
]
