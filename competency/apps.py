from django.apps import AppConfig


class CompetencyConfig(AppConfig):
    name = "competency"
    verbose_name = "Staff competency (proficiency tests)"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LABELLER

        nav.register("Competency", "competency:index", role=LABELLER, order=72)
