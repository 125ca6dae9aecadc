"""Helpers for the report tests: fake run folders (fixture data) and a headless Chromium driver."""
