"""Sandbox components: each one a part of the local ACGS-like stack (services, later databases, ...)."""
