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
        nav.register("Lab settings", "annotations:lab_settings", role=LAB_ADMIN, order=85, menu=nav.ADMIN_MENU)
        nav.register("Taxonomy", "annotations:taxonomy", role=LAB_ADMIN, order=80, menu=nav.ADMIN_MENU)
        nav.register("Audit log", "annotations:audit_log", role=LAB_ADMIN, order=90, menu=nav.ADMIN_MENU)
        nav.register("Export cells", "annotations:cells_export", role=LAB_ADMIN, order=92, menu=nav.ADMIN_MENU)
        nav.register("Import cells", "annotations:cells_import", role=LAB_ADMIN, order=93, menu=nav.ADMIN_MENU)
