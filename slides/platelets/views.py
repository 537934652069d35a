"""Pages for the platelet estimate: a reviewer corrects a field's platelet count on the
verification screen; lab admins calibrate the factor and turn the estimate on. Thin: validate, call
a service (slides.platelets.services) or a selector."""
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from annotations.models import LabSettings
from leukoportal.errors import call_with_messages, error_text
from leukoportal.roles import LAB_ADMIN, REVIEWER, role_required

from .. import services as slide_services
from ..models import ReferenceInterval, SlideField
from . import selectors, services
from .calibration import MIN_PAIRS


@role_required(REVIEWER)
@require_POST
def field_platelets_correct(request, pk: int, field_pk: int):
    field = get_object_or_404(SlideField, pk=field_pk, slide_id=pk)
    count = request.POST.get("count", "")
    call_with_messages(request, lambda: services.field_platelet_correct(field=field, actor=request.user, count=count),
                       refusals=slide_services.EDIT_REFUSALS,
                       success=lambda _: f"Platelet count of field {field.position + 1} saved.")
    return redirect(reverse("slides:verify", kwargs={"pk": pk}) + f"#platelet-field-{field.pk}")


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def platelet_settings(request):
    """Turn the estimate on or off (``action=enable``), or calibrate the factor from pairs typed one
    slide per line (``action=preview`` shows the factor and its interval; ``action=calibrate``
    stores it)."""
    status, preview, pairs_text = 200, None, ""
    if request.method == "POST":
        action = request.POST.get("action", "enable")
        pairs_text = request.POST.get("pairs", "")
        try:
            if action == "enable":
                services.platelet_settings_update(actor=request.user, enabled=request.POST.get("enabled") == "on")
                messages.success(request, "Platelet estimate settings saved.")
                return redirect("slides:platelet_settings")
            pairs = selectors.platelet_calibration_parse(text=pairs_text)
            if action == "calibrate":
                lab = services.platelet_calibration_save(actor=request.user, pairs=pairs)
                messages.success(request, f"Factor calibrated on {lab.platelet_calibration_n} slides: "
                                          f"{lab.platelet_factor:g} (95% interval {lab.platelet_factor_low:g}–"
                                          f"{lab.platelet_factor_high:g}).")
                return redirect("slides:platelet_settings")
            preview = selectors.platelet_calibration_compute(pairs=selectors.platelet_calibration_pairs(pairs=pairs))
        except ValidationError as exc:
            messages.error(request, error_text(exc))
            status = 400
    lab = LabSettings.get()
    return render(request, "slides/platelet_settings.html", {
        "lab": lab, "calibration": lab.platelet_calibration(), "preview": preview, "pairs_text": pairs_text,
        "min_pairs": MIN_PAIRS,
        "rule": ReferenceInterval.objects.filter(measure=ReferenceInterval.Measure.PLATELETS).first(),
    }, status=status)
