from django.urls import path

from leukoportal.api_routing import by_method

from . import api, export_views

urlpatterns = [
    path("images/", by_method(get=api.ImageListApi, post=api.ImageCreateApi), name="api_images"),
    path("images/<int:pk>/", api.ImageDetailApi.as_view(), name="api_image_detail"),
    path("images/<int:pk>/file/", api.ImageFileApi.as_view(), name="api_image_file"),
    path("batches/", api.BatchUploadApi.as_view(), name="api_batches"),
    path("classes/", api.CellClassListApi.as_view(), name="api_classes"),
    path("classes/save/", api.CellClassSaveApi.as_view(), name="api_class_save"),
]

urlpatterns += [
    path("queues/", api.QueueCountsApi.as_view(), name="api_queues"),
    path("queues/<slug:queue>/", api.QueueListApi.as_view(), name="api_queue"),
    path("cells/<int:pk>/", api.LabellingCellApi.as_view(), name="api_cell"),
    path("labels/", api.LabelCreateApi.as_view(), name="api_labels"),
    path("labels/bulk/", api.LabelBulkCreateApi.as_view(), name="api_labels_bulk"),
    path("labels/withdraw/", api.LabelWithdrawApi.as_view(), name="api_label_withdraw"),
    path("adjudications/", by_method(get=api.AdjudicationListApi, post=api.AdjudicationCreateApi),
         name="api_adjudications"),
    path("lab-settings/", by_method(get=api.LabSettingsApi, post=api.LabSettingsUpdateApi), name="api_lab_settings"),
    path("exports/cells/", export_views.CellExportApi.as_view(), name="api_cells_export"),
    path("imports/cells/", export_views.CellImportApi.as_view(), name="api_cells_import"),
]
