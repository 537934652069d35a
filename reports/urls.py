from django.urls import path

from . import views

app_name = "reports"
urlpatterns = [
    path("", views.index, name="index"),
    path("evaluate/", views.evaluate, name="evaluate"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation_detail"),
    path("evaluations/<int:pk>/tables/<slug:table>.<slug:fmt>", views.evaluation_download, name="evaluation_download"),
    path("evaluations/<int:pk>/plots/<slug:kind>.svg", views.evaluation_plot, name="evaluation_plot"),
    path("versions/<int:pk>/training-curves.svg", views.version_history_plot, name="version_history_plot"),
    path("versions/<int:pk>/training-history.<slug:fmt>", views.version_history_download, name="version_history_download"),
    path("compare/", views.compare, name="compare"),
    path("agreement/", views.agreement, name="agreement"),
    path("agreement/plot.svg", views.agreement_plot, name="agreement_plot"),
    path("agreement/by-<slug:by>.<slug:fmt>", views.agreement_download, name="agreement_download"),
]
