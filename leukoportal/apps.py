from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class LeukoPortalConfig(AppConfig):
    name = "leukoportal"
    verbose_name = "LeukoPortal"

    def ready(self):
        from . import nav
        from .roles import LAB_ADMIN

        nav.register("Django admin", "admin:index", role=LAB_ADMIN, order=99, menu=nav.ADMIN_MENU)


class LabAdminConfig(AdminConfig):
    default_site = "leukoportal.admin_site.LabAdminSite"
