from django.urls import path

from . import views

app_name = "competency"
urlpatterns = [
    path("", views.index, name="index"),
    path("tests/new/", views.test_build, name="build"),
    path("tests/<int:pk>/", views.test_detail, name="test"),
    path("tests/<int:pk>/assign/", views.test_assign, name="assign"),
    path("tests/<int:pk>/model/", views.test_model_sit, name="model_sit"),
    path("tests/<int:pk>/new-version/", views.test_new_version, name="new_version"),
    path("take/<int:pk>/", views.take, name="take"),
    path("take/<int:pk>/submit/", views.submit, name="submit"),
    path("results/<int:pk>/", views.result, name="result"),
    path("results/<int:pk>/sign-off/", views.sign_off, name="sign_off"),
    path("results/<int:pk>/record.pdf", views.result_pdf, name="pdf"),
    path("people/<str:username>/", views.person_history, name="person"),
    path("summary/", views.summary, name="summary"),
    path("export.csv", views.export_csv, name="export"),
]
