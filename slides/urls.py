from django.urls import path

from . import export_views, views
from .morphology import views as morphology_views
from .platelets import views as platelet_views

app_name = "slides"
urlpatterns = [
    path("", views.slide_list, name="list"),
    path("reference-intervals/", views.reference_intervals, name="reference_intervals"),
    path("export/", export_views.slides_export, name="export"),
    path("platelet-settings/", platelet_views.platelet_settings, name="platelet_settings"),
    path("<int:pk>/fields/<int:field_pk>/platelets/", platelet_views.field_platelets_correct,
         name="field_platelets_correct"),
    path("<int:pk>/red-cells/", morphology_views.red_cells_grade, name="red_cells_grade"),
    path("<int:pk>/", views.slide_detail, name="detail"),
    path("<int:pk>/upload/", views.slide_upload, name="upload"),
    path("<int:pk>/update/", views.slide_update, name="update"),
    path("<int:pk>/verify/", views.slide_verify, name="verify"),
    path("<int:pk>/cells/<int:cell_pk>/reclassify/", views.cell_reclassify, name="cell_reclassify"),
    path("<int:pk>/cells/confirm/", views.cells_confirm, name="cells_confirm"),
    path("<int:pk>/sign/", views.slide_sign, name="sign"),
    path("<int:pk>/release/", views.slide_release, name="release"),
    path("<int:pk>/release/return/", views.slide_release_return, name="release_return"),
    path("<int:pk>/correct/", views.slide_correct, name="correct"),
    path("<int:pk>/retry/", views.slide_retry, name="retry"),
    path("<int:pk>/report/", views.slide_report, name="report"),
    path("<int:pk>/report.csv", views.slide_report_csv, name="report_csv"),
    path("<int:pk>/report.pdf", views.slide_report_pdf, name="report_pdf"),
    path("<int:pk>/report.fhir.json", views.slide_report_fhir, name="report_fhir"),
    path("<int:pk>/report.hl7", views.slide_report_hl7, name="report_hl7"),
]
