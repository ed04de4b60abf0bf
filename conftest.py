"""Root conftest: a private Airflow home for this test session, before anything imports Airflow."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

if "AIRFLOW_HOME" not in os.environ or os.environ.get("CLARKY_FRESH_AIRFLOW_HOME", "1") == "1":
    _home = tempfile.mkdtemp(prefix="clarky-airflow-home-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dags_examples")
