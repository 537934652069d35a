from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "Reports"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import REVIEWER

        nav.register("Reports", "reports:index", role=REVIEWER, order=60)
        nav.register("Agreement", "reports:agreement", role=REVIEWER, order=65)
