"""The lab admin's LIS interface pages: the monitor (every message with its state, attempts and the
LIS's answer; send again), the destinations, the order log."""
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from leukoportal.forms import form_save
from leukoportal.roles import LAB_ADMIN, role_required

from . import selectors, services
from .forms import DestinationForm
from .models import Destination, OutboxMessage


@role_required(LAB_ADMIN)
def monitor(request):
    state = request.GET.get("state") or ""
    if state not in OutboxMessage.State.values:
        state = ""
    return render(request, "lis/monitor.html", {
        "messages_out": selectors.messages_list(state=state or None), "state": state,
        "states": OutboxMessage.State.choices, "alerts": selectors.delivery_alerts(),
        "inbound": selectors.inbound_list(limit=50), "destinations": selectors.destinations_list(),
    })


@role_required(LAB_ADMIN)
@require_POST
def message_resend(request, pk: int):
    message = get_object_or_404(OutboxMessage, pk=pk)
    try:
        message = services.message_resend(actor=request.user, message=message)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{message.accession} v{message.version} queued again as {message.control_id}.")
    return redirect("lis:monitor")


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def destination_list(request):
    form = DestinationForm(request.POST or None, initial={"active": True, "sending_application": "LEUKOPORTAL"})
    if request.method == "POST":
        if form.is_valid() and form_save(form, lambda: services.destination_create(actor=request.user,
                                                                                  **form.cleaned_data)):
            messages.success(request, f"Destination {form.cleaned_data['name']} added.")
            return redirect("lis:destinations")
    return render(request, "lis/destinations.html", {
        "form": form, "destinations": selectors.destinations_list(), "order_codes": selectors.order_codes_list(),
    }, status=400 if request.method == "POST" else 200)


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def destination_update(request, pk: int):
    destination = get_object_or_404(Destination, pk=pk)
    initial = {f: getattr(destination, f) for f in services.DESTINATION_FIELDS if f != "bearer_token"}
    form = DestinationForm(request.POST or None, initial=initial)
    if request.method == "POST":
        if form.is_valid() and form_save(form, lambda: services.destination_update(
                actor=request.user, destination=destination, **form.cleaned_data)):
            messages.success(request, f"Destination {form.cleaned_data['name']} saved.")
            return redirect("lis:destinations")
    return render(request, "lis/destination_edit.html", {"form": form, "destination": destination},
                  status=400 if request.method == "POST" else 200)
