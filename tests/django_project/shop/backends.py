"""A project's own subclass of neoq's task backend, under another name: served all the same."""

from neoq.contrib.django.tasks import NeoqTaskBackend


class CustomTaskBackend(NeoqTaskBackend):
    pass
