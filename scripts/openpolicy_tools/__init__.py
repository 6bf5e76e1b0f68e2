"""Helpers shared by the scripts of openpolicy-deploy (bootstrap, local cluster, images)."""
