from django.urls import path

from . import export_views, views

app_name = "annotations"
urlpatterns = [
    path("upload/", views.upload, name="upload"),
    path("images/", views.image_list, name="image_list"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("images/<int:pk>/file/", views.image_file, name="image_file"),
    path("images/<int:pk>/thumb/", views.image_thumb, name="image_thumb"),
    path("images/<int:pk>/split/", views.image_split_move, name="image_split_move"),
    path("label/", views.label_index, name="label_index"),
    path("label/cell/<int:pk>/", views.label_cell, name="label_cell"),
    path("label/<slug:queue>/", views.label_queue, name="label_queue"),
    path("review/", views.review_queue, name="review_queue"),
    path("review/<int:pk>/", views.review_decide, name="review_decide"),
    path("agreement/", views.agreement, name="agreement"),
    path("settings/labelling/", views.lab_settings, name="lab_settings"),
    path("audit/", views.audit_log, name="audit_log"),
    path("taxonomy/", views.taxonomy, name="taxonomy"),
    path("export/cells/", export_views.cells_export, name="cells_export"),
    path("export/progress/", export_views.export_progress, name="export_progress"),
    path("import/cells/", export_views.cells_import, name="cells_import"),
]
