from django.contrib import admin

from .models import OrderCode


@admin.register(OrderCode)
class OrderCodeAdmin(admin.ModelAdmin):
    """The order codes (OBR-4) that mean "blood film differential"; audited like every admin change."""

    list_display = ("code", "coding_system", "description", "active")
    list_editable = ("active",)
