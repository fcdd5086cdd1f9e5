"""Schedules: when the search takes an architecture step."""
