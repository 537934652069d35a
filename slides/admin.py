from django.contrib import admin

from .models import ReferenceInterval


@admin.register(ReferenceInterval)
class ReferenceIntervalAdmin(admin.ModelAdmin):
    list_display = ("name", "codes", "measure", "low", "high", "flag_low", "flag_high", "active", "display_order")
    list_editable = ("low", "high", "active")
