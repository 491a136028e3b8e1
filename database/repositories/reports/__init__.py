"""Delivery reports: their links to sends, and the suppression list."""
