"""The lab admin's page of sources: list, add, rename, describe, (de)activate, make the default."""
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from leukoportal.forms import form_errors_text, form_save
from leukoportal.roles import LAB_ADMIN, role_required

from . import selectors, services
from .forms import SourceCreateForm, SourceUpdateForm
from .models import Source


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def source_list(request):
    form = SourceCreateForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid() and form_save(form, lambda: services.source_create(actor=request.user,
                                                                             **form.cleaned_data)):
            messages.success(request, f"Source {form.cleaned_data['name']} added.")
            return redirect("sources:list")
    return render(request, "sources/list.html", {"form": form, "sources": selectors.sources_with_counts()},
                  status=400 if request.method == "POST" else 200)


@role_required(LAB_ADMIN)
@require_POST
def source_update(request, pk: int):
    source = get_object_or_404(Source, pk=pk)
    form = SourceUpdateForm(request.POST)
    if form.is_valid() and form_save(form, lambda: services.source_update(actor=request.user, source=source,
                                                                         **form.cleaned_data)):
        messages.success(request, f"Source {form.cleaned_data['name']} saved.")
        return redirect("sources:list")
    messages.error(request, f"{source.name}: {form_errors_text(form)}")
    return render(request, "sources/list.html", {"form": SourceCreateForm(), "sources": selectors.sources_with_counts(),
                                                 "failed": source.pk}, status=400)
