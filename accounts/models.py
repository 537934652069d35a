from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class AccessSettings(models.Model):
    """How the lab's sessions end (one row, set by a lab admin): a session idle for
    ``idle_timeout_minutes`` is logged out, the page warns ``idle_warning_minutes`` before."""

    idle_timeout_minutes = models.PositiveSmallIntegerField(
        default=15, validators=[MinValueValidator(2), MaxValueValidator(720)],
        help_text="Minutes without a page opened or anything saved before a session is logged out (2-720).")
    idle_warning_minutes = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(30)],
        help_text="Minutes before that the page warns and offers to stay signed in (1-30).")
    require_otp_for_signers = models.BooleanField(
        default=False, help_text="Reviewers and lab admins (those who sign and promote) must sign in with a second "
                                 "factor (an authenticator app's code); they enrol at their next sign-in.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "access settings"

    @classmethod
    def get(cls) -> "AccessSettings":
        return cls.objects.get_or_create(pk=1)[0]

    @classmethod
    def current(cls) -> "AccessSettings":
        """The lab's row, or the defaults (unsaved) before a lab admin has saved any: a read writes nothing."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.idle_warning_minutes >= self.idle_timeout_minutes:
            raise ValidationError({"idle_warning_minutes": "The warning must come before the timeout."})


class DirectoryGroupRole(models.Model):
    """A directory group whose members get a role (set by a lab admin; the environment's
    LDAP_GROUP_* variables, where set, take precedence over every row)."""

    ROLE_CHOICES = [("labeller", "labeller"), ("reviewer", "reviewer"), ("lab_admin", "lab admin")]

    group_dn = models.CharField(max_length=500, unique=True, help_text="The group's distinguished name (DN).")
    role = models.CharField(max_length=20, choices=ROLE_CHOICES)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group_dn"]

    def __str__(self) -> str:
        return f"{self.group_dn} -> {self.role}"
