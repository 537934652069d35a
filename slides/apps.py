from django.apps import AppConfig


class SlidesConfig(AppConfig):
    name = "slides"
    verbose_name = "Slides and differential counts"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN, LABELLER

        nav.register("Slides", "slides:list", role=LABELLER, order=40)
        nav.register("Reference intervals", "slides:reference_intervals", role=LAB_ADMIN, order=85, menu=nav.ADMIN_MENU)
        nav.register("Export slides", "slides:export", role=LAB_ADMIN, order=94, menu=nav.ADMIN_MENU)
