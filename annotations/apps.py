from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"
    verbose_name = "Cell images and labels"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN, LABELLER

        nav.register("Upload", "annotations:upload", role=LABELLER, order=10)
        nav.register("Images", "annotations:image_list", role=LABELLER, order=20)
        nav.register("Taxonomy", "annotations:taxonomy", role=LAB_ADMIN, order=80)
        nav.register("Audit", "annotations:audit_log", role=LAB_ADMIN, order=90)
