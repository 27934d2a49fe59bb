"""API keys: created and shown once, stored as a digest, authenticated in one statement."""

import hashlib
import hmac
import secrets

from django.db import connection

from api.models import ApiKey
from subscriptions.models import Organization

KEY_PREFIX = "sk_live_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(organization: Organization, name: str = "") -> tuple[ApiKey, str]:
    """Returns the stored key and the key itself, which is shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        organization=organization, name=name, prefix=key[: len(KEY_PREFIX) + 6], key_hash=hash_key(key)
    )
    return api_key, key


def authenticate_api_key(key: str) -> ApiKey | None:
    """The live key with its organization, in one statement. Every API request runs this, so the
    statement is built once per database vendor instead of by the ORM per request (the ORM's
    compile of select_related cost more CPU than the rest of a single-event POST)."""
    digest = hash_key(key)
    sql, columns = _api_key_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for n, (_, column, converters) in enumerate(columns):
        for convert in converters:
            values[n] = convert(values[n], column, connection)
    split = len(ApiKey._meta.concrete_fields)
    candidate = ApiKey.from_db(connection.alias, [c[0] for c in columns[:split]], values[:split])
    organization = Organization.from_db(connection.alias, [c[0] for c in columns[split:]], values[split:])
    ApiKey._meta.get_field("organization").set_cached_value(candidate, organization)
    # The lookup is by digest; compare again in constant time so timing says nothing about the key.
    if hmac.compare_digest(candidate.key_hash, digest):
        return candidate
    return None


_API_KEY_STATEMENTS: dict[str, tuple[str, list]] = {}


def _api_key_statement() -> tuple[str, list]:
    """SELECT <key columns>, <organization columns> ... WHERE key_hash = %s and not revoked, with
    each column's (attname, expression, database converters) as the ORM's compiler applies them."""
    vendor = connection.vendor
    if vendor not in _API_KEY_STATEMENTS:
        quote = connection.ops.quote_name
        selected, columns = [], []
        for alias, model in (("k", ApiKey), ("o", Organization)):
            for f in model._meta.concrete_fields:
                column = f.get_col(alias)
                converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                selected.append(f"{alias}.{quote(f.column)}")
                columns.append((f.attname, column, converters))
        sql = (
            f"SELECT {', '.join(selected)} FROM {quote(ApiKey._meta.db_table)} k "
            f"JOIN {quote(Organization._meta.db_table)} o ON o.id = k.organization_id "
            "WHERE k.key_hash = %s AND k.revoked_at IS NULL LIMIT 1"
        )
        _API_KEY_STATEMENTS[vendor] = (sql, columns)
    return _API_KEY_STATEMENTS[vendor]
