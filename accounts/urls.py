from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("", views.access, name="access"),
    path("users/<int:pk>/logout-everywhere/", views.logout_everywhere, name="logout_everywhere"),
    path("keepalive/", views.keepalive, name="keepalive"),
    path("directory/", views.directory_group_role, name="directory_group_role"),
    path("otp/enrol/", views.otp_enrol, name="otp_enrol"),
    path("otp/verify/", views.otp_verify, name="otp_verify"),
    path("users/<int:pk>/otp-reset/", views.otp_reset, name="otp_reset"),
]
