from django.contrib import admin
from django.urls import path

from operatorapi import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path(".well-known/jwks.json", views.jwks, name="jwks"),
]
