# The checks' plugin; also registered as a pytest11 entry point, so `pytest checks` works from anywhere.
pytest_plugins = ["acgs_verify.plugin"]
