from django.urls import include, path
from shop import views

urlpatterns = [
    path("orders/", views.create_order),
    path("orders/on-commit/", views.create_order_on_commit),
    path("orders/task/", views.create_order_with_task),
    path("admin/neoq/", include("neoq.contrib.django.dashboard")),  # staff users only
]
