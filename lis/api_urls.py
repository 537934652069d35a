from django.urls import path

from . import api

urlpatterns = [
    path("lis/destinations/", api.DestinationListApi.as_view(), name="api_lis_destinations"),
    path("lis/destinations/create/", api.DestinationCreateApi.as_view(), name="api_lis_destination_create"),
    path("lis/destinations/<int:pk>/", api.DestinationUpdateApi.as_view(), name="api_lis_destination_update"),
    path("lis/messages/", api.MessageListApi.as_view(), name="api_lis_messages"),
    path("lis/messages/<int:pk>/", api.MessageDetailApi.as_view(), name="api_lis_message"),
    path("lis/messages/<int:pk>/resend/", api.MessageResendApi.as_view(), name="api_lis_message_resend"),
    path("lis/orders/", api.InboundListApi.as_view(), name="api_lis_orders"),
]
