from django.apps import AppConfig


class ClassifierConfig(AppConfig):
    name = "classifier"
    verbose_name = "Classifier"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN, REVIEWER

        nav.register("Models", "classifier:versions", role=REVIEWER, order=50)
        nav.register("Training", "classifier:training", role=LAB_ADMIN, order=55)
