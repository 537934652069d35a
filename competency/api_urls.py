from django.urls import path

from . import api

urlpatterns = [
    path("competency/decided/", api.DecidedCountsApi.as_view(), name="api_competency_decided"),
    path("competency/tests/", api.TestListApi.as_view(), name="api_competency_tests"),
    path("competency/tests/create/", api.TestCreateApi.as_view(), name="api_competency_test_create"),
    path("competency/tests/<int:pk>/", api.TestDetailApi.as_view(), name="api_competency_test"),
    path("competency/tests/<int:pk>/assign/", api.TestAssignApi.as_view(), name="api_competency_assign"),
    path("competency/tests/<int:pk>/new-version/", api.TestNewVersionApi.as_view(),
         name="api_competency_new_version"),
    path("competency/tests/<int:pk>/model-sittings/", api.ModelSitApi.as_view(), name="api_competency_model_sit"),
    path("competency/assignments/", api.AssignmentListApi.as_view(), name="api_competency_assignments"),
    path("competency/assignments/<int:pk>/", api.AssignmentDetailApi.as_view(), name="api_competency_assignment"),
    path("competency/assignments/<int:pk>/answers/", api.AnswerApi.as_view(), name="api_competency_answer"),
    path("competency/assignments/<int:pk>/submit/", api.SubmitApi.as_view(), name="api_competency_submit"),
    path("competency/assignments/<int:pk>/sign-off/", api.SignOffApi.as_view(), name="api_competency_sign_off"),
    path("competency/summary/", api.SummaryApi.as_view(), name="api_competency_summary"),
]
