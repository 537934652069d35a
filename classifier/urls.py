from django.urls import path

from . import views

app_name = "classifier"
urlpatterns = [
    path("", views.versions, name="versions"),
    path("<int:pk>/promote/", views.version_promote, name="version_promote"),
    path("<int:pk>/rollback/", views.version_rollback, name="version_rollback"),
    path("training/", views.training, name="training"),
    path("training/start/", views.training_start, name="training_start"),
    path("training/schedule/", views.schedule, name="schedule"),
    path("training/gate/", views.gate_settings, name="gate_settings"),
    path("training/<int:pk>/", views.training_run, name="training_run"),
    path("training/<int:pk>/progress.json", views.training_progress, name="training_progress"),
    path("training/<int:pk>/cancel/", views.training_cancel, name="training_cancel"),
    path("training/<int:pk>/retry/", views.training_retry, name="training_retry"),
]
