# Superset 6.1 with BotFlow's configuration (superset/superset_config.py): the botflow image plus
# Superset's own virtualenv, pinned as `botflow superset up` pins it (dagster_project/serve/superset/service.py).
ARG BOTFLOW_IMAGE=botflow-warehouse:latest
FROM ${BOTFLOW_IMAGE}
USER root
RUN python -c "from pathlib import Path; from dagster_project.serve.superset.service import install_venv; \
install_venv(Path('/opt/superset'))"
ENV BOTFLOW_SUPERSET_VENV=/opt/superset
USER botflow
