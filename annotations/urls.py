from django.urls import path

from . import views

app_name = "annotations"
urlpatterns = [
    path("upload/", views.upload, name="upload"),
    path("images/", views.image_list, name="image_list"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("images/<int:pk>/file/", views.image_file, name="image_file"),
    path("images/<int:pk>/split/", views.image_split_move, name="image_split_move"),
    path("audit/", views.audit_log, name="audit_log"),
    path("taxonomy/", views.taxonomy, name="taxonomy"),
]
