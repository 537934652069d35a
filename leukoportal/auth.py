"""DRF token authentication with an expiry (tokens older than API_TOKEN_TTL_HOURS are refused)."""
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token.created < timezone.now() - timedelta(hours=settings.API_TOKEN_TTL_HOURS):
            raise exceptions.AuthenticationFailed("Token has expired; create a new one.")
        return user, token
