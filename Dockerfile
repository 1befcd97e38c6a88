# One image for every distloop service: worker, flower, producer.
#   docker build -t distloop .
FROM python:3.11-slim

# Install the package (and Celery, kombu, redis-py, Flower) from this repository.
# LICENSE too: pyproject.toml names it in license-files; without it setuptools only
# warns, and the installed package carries no licence text.
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY tasks ./tasks
COPY worker ./worker
COPY producer ./producer
RUN pip install --no-cache-dir '.[flower]' && rm -rf /src

# Workers run as an unprivileged user, from a folder nobody else can write to:
# Celery imports from the current directory first.
RUN useradd --create-home --uid 10001 distloop
USER distloop
WORKDIR /home/distloop

# Default: a worker with one process per CPU of the container.
CMD ["distloop", "worker"]
