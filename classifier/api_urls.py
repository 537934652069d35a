from django.urls import path

from . import api

urlpatterns = [
    path("model-versions/", api.ModelVersionListApi.as_view(), name="api_model_versions"),
    path("model-versions/<int:pk>/", api.ModelVersionDetailApi.as_view(), name="api_model_version_detail"),
    path("model-versions/<int:pk>/promote/", api.ModelVersionPromoteApi.as_view(), name="api_model_version_promote"),
    path("model-versions/<int:pk>/rollback/", api.ModelVersionRollbackApi.as_view(), name="api_model_version_rollback"),
    path("training-runs/", api.TrainingRunListApi.as_view(), name="api_training_runs"),
    path("training-runs/start/", api.TrainingRunStartApi.as_view(), name="api_training_run_start"),
    path("training-runs/<int:pk>/", api.TrainingRunDetailApi.as_view(), name="api_training_run_detail"),
    path("training-runs/<int:pk>/cancel/", api.TrainingRunCancelApi.as_view(), name="api_training_run_cancel"),
    path("training-runs/<int:pk>/retry/", api.TrainingRunRetryApi.as_view(), name="api_training_run_retry"),
]
