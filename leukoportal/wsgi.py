import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leukoportal.settings")
application = get_wsgi_application()
# Import every view now (statsmodels and matplotlib take seconds), not in the first request a user makes:
# with gunicorn --preload, once, before the workers fork and before the port opens.
get_resolver().url_patterns
