"""The verification screen's red-cell form (a reviewer grades every finding at once). Thin:
read the form, call the service, go back to the screen."""
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from leukoportal.errors import call_with_messages
from leukoportal.roles import REVIEWER, role_required
from slides.models import Slide

from . import catalogue, services


@role_required(REVIEWER)
@require_POST
def red_cells_grade(request, pk: int):
    slide = get_object_or_404(Slide, pk=pk)
    grades = {f.code: request.POST.get(f"grade-{f.code}", "") for f in catalogue.FINDINGS
              if f.scale != catalogue.PERCENT and f"grade-{f.code}" in request.POST}
    percents = {f.code: request.POST.get(f"percent-{f.code}", "") for f in catalogue.FINDINGS
                if f.scale == catalogue.PERCENT and f"percent-{f.code}" in request.POST}
    call_with_messages(
        request, lambda: services.slide_red_cells_grade(slide=slide, actor=request.user, grades=grades,
                                                        percents=percents),
        refusals=(services.SlideLocked, services.ValidationError),
        success=lambda result: f"Red-cell morphology saved ({len(result)} finding(s) graded).")
    return redirect(reverse("slides:verify", kwargs={"pk": pk}) + "#verify-red-cells")
