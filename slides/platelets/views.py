"""Pages for the platelet estimate: a reviewer corrects a field's platelet count on the
verification screen; lab admins turn the estimate on and set its factor. Thin: validate, call a
service (slides.platelets.services)."""
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
from . import services


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
    lab = LabSettings.get()
    status = 200
    if request.method == "POST":
        try:
            services.platelet_settings_update(actor=request.user, enabled=request.POST.get("enabled") == "on",
                                               factor=request.POST.get("factor", ""))
        except ValidationError as exc:
            messages.error(request, error_text(exc))
            status = 400
        else:
            messages.success(request, "Platelet estimate settings saved.")
            return redirect("slides:platelet_settings")
    return render(request, "slides/platelet_settings.html", {
        "lab": lab, "rule": ReferenceInterval.objects.filter(measure=ReferenceInterval.Measure.PLATELETS).first(),
    }, status=status)
