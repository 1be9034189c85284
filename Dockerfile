# The app on its embedded default (shipped MNIST sample, LeNet-5 preset). No network needed at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/cnnviz

COPY pyproject.toml README.md ./
COPY engine ./engine
COPY app ./app
COPY static ./static
# Editable install keeps static/ beside app/, where the server looks for the page.
RUN python -m pip install -e . && useradd --create-home cnnviz && mkdir -p /srv/cnnviz/data && chown cnnviz /srv/cnnviz/data
USER cnnviz

EXPOSE 8000
# Inside a container the port must be reachable from outside it: bind all interfaces explicitly.
CMD ["cnnviz", "--host", "0.0.0.0", "--port", "8000"]
