"""Root conftest: give Airflow a private home before anything imports it."""

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "clarky-provider-airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
