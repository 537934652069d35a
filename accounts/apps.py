from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and sessions"

    def ready(self):
        from leukoportal import nav
        from leukoportal.roles import LAB_ADMIN

        nav.register("Sessions and sign-in", "accounts:access", role=LAB_ADMIN, order=87, menu=nav.ADMIN_MENU)
