"""The demo: a whole turn of the loop on tiny local models, with simulated annotators ranking through the real API.

Kept out of the apps: nothing in `labeling` or `training` depends on it; `manage.py demo_loop` and the tests call it.
"""
