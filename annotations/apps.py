from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"
    verbose_name = "Cell images and labels"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN, LABELLER, REVIEWER

        nav.register("Upload", "annotations:upload", role=LABELLER, order=10)
        nav.register("Label", "annotations:label_index", role=LABELLER, order=15)
        nav.register("Images", "annotations:image_list", role=LABELLER, order=20)
        nav.register("Review", "annotations:review_queue", role=REVIEWER, order=30)
        nav.register("Expert agreement", "annotations:agreement", role=REVIEWER, order=40)
        nav.register("Lab settings", "annotations:lab_settings", role=LAB_ADMIN, order=85)
        nav.register("Taxonomy", "annotations:taxonomy", role=LAB_ADMIN, order=80)
        nav.register("Audit", "annotations:audit_log", role=LAB_ADMIN, order=90)
