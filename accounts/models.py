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

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.idle_warning_minutes >= self.idle_timeout_minutes:
            raise ValidationError({"idle_warning_minutes": "The warning must come before the timeout."})
