from django.urls import path

from . import views

app_name = "lis"
urlpatterns = [
    path("", views.monitor, name="monitor"),
    path("messages/<int:pk>/resend/", views.message_resend, name="resend"),
    path("destinations/", views.destination_list, name="destinations"),
    path("destinations/<int:pk>/", views.destination_update, name="destination_update"),
]
