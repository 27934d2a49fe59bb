from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(("api.urls", "api"))),
]

# Under /api/ a 500 is JSON like every other API error (503 for a database outage).
handler500 = "api.errors.server_error"
