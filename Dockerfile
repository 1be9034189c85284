# The app on its embedded default (shipped MNIST sample, LeNet-5 preset). No network needed at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

# A regular (non-editable) install: the page is package data (app/static/ in the wheel), so the
# sources are not needed at run time and are removed. EXTRAS=redis adds the Redis session store.
ARG EXTRAS=""
COPY pyproject.toml README.md /tmp/src/
COPY engine /tmp/src/engine
COPY app /tmp/src/app
COPY static /tmp/src/static
RUN python -m pip install "/tmp/src${EXTRAS:+[$EXTRAS]}" && rm -rf /tmp/src \
    && useradd --create-home cnnviz && mkdir -p /srv/cnnviz/data && chown cnnviz /srv/cnnviz/data
WORKDIR /srv/cnnviz
USER cnnviz

EXPOSE 8000
# Inside a container the port must be reachable from outside it: bind all interfaces explicitly.
CMD ["cnnviz", "--host", "0.0.0.0", "--port", "8000"]
