from django.urls import path

from . import api

urlpatterns = [
    path("images/", api.ImageListCreateApi.as_view(), name="api_images"),
    path("images/<int:pk>/", api.ImageDetailApi.as_view(), name="api_image_detail"),
    path("images/<int:pk>/file/", api.ImageFileApi.as_view(), name="api_image_file"),
    path("batches/", api.BatchUploadApi.as_view(), name="api_batches"),
    path("classes/", api.CellClassListApi.as_view(), name="api_classes"),
    path("classes/save/", api.CellClassSaveApi.as_view(), name="api_class_save"),
]
