from django.db import models


class IdempotencyKey(models.Model):
    """One `Idempotency-Key` an organization sent with a POST, and the answer it got.

    The row is inserted before the request is handled (the unique constraint is the lock: a second
    request with the same key waits for nothing and is told the first is still running), and the
    answer is stored when it is ready, so a retry within 24 hours gets the same answer and nothing is
    done twice."""

    organization = models.ForeignKey(  # indexed by the unique (organization, key)
        "subscriptions.Organization",
        on_delete=models.CASCADE,
        related_name="idempotency_keys",
        db_index=False,
    )
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty while running")
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="idempotency_key_unique_per_org"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created_idx")]

    def __str__(self):
        return self.key


class ApiKey(models.Model):
    """An organization's API key. Only a SHA-256 digest is stored: the keys are long random
    strings, so a fast hash is enough and lookups stay cheap."""

    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "subscriptions_apikey"  # the table the model had in subscriptions; its rows stay

    def __str__(self):
        return f"{self.prefix}… ({self.organization})"
