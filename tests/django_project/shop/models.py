from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)


class Receipt(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    via = models.CharField(max_length=20)
