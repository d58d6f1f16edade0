from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("win-rates/", views.win_rates_index, name="win-rates-index"),
    path("win-rates/<int:prompt_set_id>/", views.win_rates, name="win-rates"),
]
