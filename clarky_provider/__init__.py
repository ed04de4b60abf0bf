"""Apache Airflow provider for the Clarky CRM API."""

__version__ = "0.1.0"
