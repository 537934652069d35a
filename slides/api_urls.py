from django.urls import path

from leukoportal.api_routing import by_method

from . import api, export_views
from .platelets import api as platelet_api

urlpatterns = [
    path("exports/slides/", export_views.SlidesExportApi.as_view(), name="api_slides_export"),
    path("slides/", by_method(get=api.SlideListApi, post=api.SlideCreateApi), name="api_slides"),
    path("slides/<int:pk>/", api.SlideDetailApi.as_view(), name="api_slide_detail"),
    path("slides/<int:pk>/images/", api.SlideImagesUploadApi.as_view(), name="api_slide_images"),
    path("slides/<int:pk>/cells/", api.SlideCellListApi.as_view(), name="api_slide_cells"),
    path("slides/<int:pk>/cells/<int:cell_pk>/reclassify/", api.SlideCellReclassifyApi.as_view(),
         name="api_slide_cell_reclassify"),
    path("slides/<int:pk>/cells/confirm/", api.SlideCellsConfirmApi.as_view(), name="api_slide_cells_confirm"),
    path("slides/platelet-settings/",
         by_method(get=platelet_api.PlateletSettingsApi, post=platelet_api.PlateletSettingsUpdateApi),
         name="api_platelet_settings"),
    path("slides/platelet-settings/calibration/", platelet_api.PlateletCalibrationApi.as_view(),
         name="api_platelet_calibration"),
    path("slides/<int:pk>/platelets/", platelet_api.SlidePlateletsApi.as_view(), name="api_slide_platelets"),
    path("slides/<int:pk>/fields/<int:field_pk>/platelets/", platelet_api.FieldPlateletsCorrectApi.as_view(),
         name="api_field_platelets_correct"),
    path("slides/<int:pk>/sign/", api.SlideSignApi.as_view(), name="api_slide_sign"),
    path("slides/<int:pk>/submit/", api.SlideSubmitApi.as_view(), name="api_slide_submit"),
    path("slides/<int:pk>/release/", api.SlideReleaseApi.as_view(), name="api_slide_release"),
    path("slides/<int:pk>/release/return/", api.SlideReleaseReturnApi.as_view(), name="api_slide_release_return"),
    path("slides/<int:pk>/correct/", api.SlideCorrectApi.as_view(), name="api_slide_correct"),
    path("slides/<int:pk>/export/json/", api.SlideExportApi.as_view(), {"fmt": "json"}, name="api_slide_export_json"),
    path("slides/<int:pk>/export/csv/", api.SlideExportApi.as_view(), {"fmt": "csv"}, name="api_slide_export_csv"),
    path("slides/<int:pk>/export/fhir/", api.SlideExportApi.as_view(), {"fmt": "fhir"}, name="api_slide_export_fhir"),
    path("slides/<int:pk>/export/hl7/", api.SlideExportApi.as_view(), {"fmt": "hl7"}, name="api_slide_export_hl7"),
]
