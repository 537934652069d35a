from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class LeukoPortalConfig(AppConfig):
    name = "leukoportal"
    verbose_name = "LeukoPortal"


class LabAdminConfig(AdminConfig):
    default_site = "leukoportal.admin_site.LabAdminSite"
