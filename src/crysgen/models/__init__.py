"""Networks (tensor -> tensor); they know nothing about losses or schedules."""
