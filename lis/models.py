"""The interface with the laboratory information system (LIS).

* :class:`Destination`: where signed results go (HL7 v2.5.1 over MLLP, or FHIR R4 REST).
* :class:`OutboxMessage`: one message for one destination, written in the signature's transaction
  (the transactional outbox); a Celery task delivers it until the LIS acknowledges it.
* :class:`InboundMessage`: every order message the listener answered, keyed by its sender and control
  ID, with the ACK it got (the same message again gets the same ACK and changes nothing).
* :class:`OrderCode`: the order codes (OBR-4) that mean "blood film differential".

Nothing here identifies a patient: an order's PID segment is never stored.
"""
from django.db import models


class Destination(models.Model):
    class Kind(models.TextChoices):
        HL7_MLLP = "hl7_mllp", "HL7 v2.5.1 ORU^R01 over MLLP"
        FHIR = "fhir", "FHIR R4 REST"

    name = models.CharField(max_length=60, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    active = models.BooleanField(default=True, help_text="Signed results are queued for it.")
    # HL7 v2 over MLLP
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    tls = models.BooleanField(default=False, help_text="MLLP inside TLS (the host's certificate is verified).")
    sending_application = models.CharField(max_length=60, blank=True, default="LEUKOPORTAL")
    sending_facility = models.CharField(max_length=60, blank=True)
    receiving_application = models.CharField(max_length=60, blank=True)
    receiving_facility = models.CharField(max_length=60, blank=True)
    # FHIR R4
    base_url = models.URLField(max_length=500, blank=True)
    bearer_token = models.CharField(max_length=500, blank=True)
    # Delivery
    timeout_s = models.FloatField(default=10.0, help_text="Wait this long for a connection and for the answer.")
    max_attempts = models.PositiveIntegerField(default=10, help_text="Attempts before a message is failed.")
    backoff_s = models.FloatField(default=5.0, help_text="Wait before the second attempt; doubled each time.")
    backoff_max_s = models.FloatField(default=600.0, help_text="The longest wait between two attempts.")
    preset = models.BooleanField(default=False, help_text="Made from the environment (LIS_* variables).")
    paused_until = models.DateTimeField(
        null=True, blank=True,
        help_text="The LIS could not be reached: nothing is sent before this time, so nothing overtakes.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (bounded exponential)."""
        return min(self.backoff_s * (2 ** max(attempts - 1, 0)), self.backoff_max_s)


class OutboxMessage(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent, awaiting the answer"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        FAILED = "failed", "Failed"

    class Event(models.TextChoices):
        FINAL = "final", "Final result"
        CORRECTED = "corrected", "Corrected result"
        WITHDRAWN = "withdrawn", "Withdrawn (superseded by a correction)"

    destination = models.ForeignKey(Destination, on_delete=models.PROTECT, related_name="messages")
    slide = models.ForeignKey("slides.Slide", on_delete=models.PROTECT, related_name="lis_messages")
    accession = models.CharField(max_length=40, db_index=True)
    version = models.PositiveIntegerField()
    event = models.CharField(max_length=10, choices=Event.choices)
    control_id = models.CharField(max_length=20, unique=True, help_text="MSH-10 (HL7) / the Bundle's id (FHIR).")
    payload = models.TextField(help_text="The message as sent: ER7 text or the FHIR Bundle's JSON.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    answer_code = models.CharField(max_length=10, blank=True, help_text="MSA-1 (AA, AE, AR) or the HTTP status.")
    answer = models.TextField(blank=True, help_text="The LIS's answer as received (ACK text, OperationOutcome).")
    error = models.TextField(blank=True, help_text="Why the last attempt did not deliver it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["destination", "state", "id"])]

    def __str__(self):
        return f"{self.control_id} ({self.accession} v{self.version}, {self.event})"


class InboundMessage(models.Model):
    """One order message answered by the listener. No PID content, no raw message."""

    sending_application = models.CharField(max_length=60, blank=True)
    sending_facility = models.CharField(max_length=60, blank=True)
    control_id = models.CharField(max_length=60)
    message_type = models.CharField(max_length=20, blank=True)
    order_control = models.CharField(max_length=4, blank=True, help_text="ORC-1: NW new, CA cancel.")
    accession = models.CharField(max_length=40, blank=True)
    order_code = models.CharField(max_length=60, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)
    wbc_count = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    slide = models.ForeignKey("slides.Slide", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ack_code = models.CharField(max_length=2)
    ack = models.TextField(help_text="The ACK sent back (sent again, unchanged, for the same message).")
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["sending_application", "sending_facility", "control_id"],
                                               name="one_inbound_message_per_control_id")]


class OrderCode(models.Model):
    """An order code (OBR-4) the lab maps to the blood film differential."""

    code = models.CharField(max_length=60)
    coding_system = models.CharField(max_length=20, blank=True, help_text="OBR-4.3, e.g. LN; blank: any.")
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["code", "coding_system"], name="one_order_code")]

    def __str__(self):
        return f"{self.code}^{self.coding_system}" if self.coding_system else self.code
