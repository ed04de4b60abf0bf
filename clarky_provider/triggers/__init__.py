"""Triggers for Airflow's triggerer: event-driven scheduling on Clarky changes."""
