from django.apps import AppConfig


class SourcesConfig(AppConfig):
    name = "sources"
    verbose_name = "Sources (microscopes and cameras)"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN

        nav.register("Sources", "sources:list", role=LAB_ADMIN, order=86, menu=nav.ADMIN_MENU)
