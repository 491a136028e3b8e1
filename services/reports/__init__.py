"""Delivery reports: bounces, delays, complaints and auto-replies read from stored mail."""
