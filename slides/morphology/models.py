"""A reviewer's grade of one red-cell finding on one slide (imported by slides.models, so that the
app's migrations see it)."""
from django.conf import settings
from django.db import models


class RedCellGrade(models.Model):
    slide = models.ForeignKey("slides.Slide", on_delete=models.CASCADE, related_name="red_cell_grades")
    finding = models.CharField(max_length=40, help_text="A code of slides.morphology.catalogue (validated there).")
    grade = models.CharField(max_length=10, help_text="0, 1+, 2+, 3+ or present (the finding's scale).")
    percent = models.FloatField(null=True, blank=True, help_text="Schistocytes: % of red cells (gives the grade).")
    graded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    graded_at = models.DateTimeField()

    class Meta:
        app_label = "slides"
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["slide", "finding"], name="one_grade_per_slide_finding")]

    def __str__(self):
        return f"{self.slide_id} {self.finding} {self.grade}"
