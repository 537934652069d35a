from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and sessions"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN

        nav.register("Sessions and sign-in", "accounts:access", role=LAB_ADMIN, order=87, menu=nav.ADMIN_MENU)

        # Second factors are set up by their user and removed by a lab admin on the sessions page (both
        # audited), never edited in the Django admin, which django-otp's plugins would register them in.
        from django.contrib import admin
        from django_otp.plugins.otp_static.models import StaticDevice
        from django_otp.plugins.otp_totp.models import TOTPDevice

        for model in (TOTPDevice, StaticDevice):
            if admin.site.is_registered(model):
                admin.site.unregister(model)
