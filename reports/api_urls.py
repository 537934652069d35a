from django.urls import path

from leukoportal.api_routing import by_method

from . import api

urlpatterns = [
    path("evaluations/", api.EvaluationListApi.as_view(), name="api_evaluations"),
    path("evaluations/request/", api.EvaluationRequestApi.as_view(), name="api_evaluation_request"),
    path("evaluations/<int:pk>/", api.EvaluationDetailApi.as_view(), name="api_evaluation_detail"),
    path("evaluations/<int:pk>/tables/<slug:table>/", api.EvaluationTableApi.as_view(), name="api_evaluation_table"),
    path("agreement/", api.AgreementApi.as_view(), name="api_agreement"),
    path("agreement/sources/", api.SourceLearningCurveApi.as_view(), name="api_agreement_sources"),
    path("retrain-schedule/", by_method(get=api.RetrainScheduleApi, post=api.RetrainScheduleUpdateApi),
         name="api_retrain_schedule"),
]
