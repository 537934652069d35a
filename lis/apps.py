from django.apps import AppConfig


class LisConfig(AppConfig):
    name = "lis"
    verbose_name = "Laboratory information system interface"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN

        nav.register("LIS interface", "lis:monitor", role=LAB_ADMIN, order=87, menu=nav.ADMIN_MENU)
