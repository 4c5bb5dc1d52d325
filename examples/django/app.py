"""A Django app in one file on pyrs: `pip install django && pyrs --app-dir examples/django app:app`.

A real project runs the same way: `pyrs mysite.wsgi:application` from the
folder holding manage.py (or `mysite.asgi:application` for Django's ASGI side).
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse, JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example only: set DJANGO_SECRET_KEY"),
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
)


def index(request):
    return HttpResponse("Hello from Django on pyrs!")


def hello(request, name):
    return JsonResponse({"hello": name, "agent": request.headers.get("User-Agent")})


def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


urlpatterns = [
    path("", index),
    path("hello/<str:name>", hello),
    path("echo", echo),
]

app = get_wsgi_application()
