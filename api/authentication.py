"""`Authorization: Bearer <API key>`: the key names its organization, and every query is scoped to it."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from api.services import authenticate_api_key

HOW = "send 'Authorization: Bearer <API key>'"


class ApiClient:
    """The caller behind a valid key (request.user); request.auth is the ApiKey itself."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, organization):
        self.organization = organization


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or len(key) > 200:
            raise AuthenticationFailed(f"Authorization: malformed header; {HOW}")
        api_key = authenticate_api_key(key)  # digest lookup plus a constant-time compare
        if api_key is None:
            raise AuthenticationFailed("Authorization: unknown or revoked API key")
        return ApiClient(api_key.organization), api_key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (with WWW-Authenticate), not 403, when the key is missing or wrong.
        return 'Bearer realm="api"'


class HasApiKey(BasePermission):
    message = f"Authorization: no API key; {HOW}"

    def has_permission(self, request, view):
        return request.auth is not None


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An organization's API key (`manage.py create_api_key <org-slug>`).",
        }
