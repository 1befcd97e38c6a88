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

# What distloop was installed with becomes a constraint on every later pip install (a
# project's requirements.txt, installed when its container starts: see docker-compose.yml).
# A project that needs another Celery or redis-py then gets pip's error naming the
# conflict, instead of a second copy in the user's site-packages shadowing the one
# distloop was built and tested with.
RUN mkdir -p /etc/distloop && pip freeze --exclude distloop > /etc/distloop/constraints.txt
ENV PIP_CONSTRAINT=/etc/distloop/constraints.txt \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Workers run as an unprivileged user. Compose mounts the user's project read-only at
# /project and starts there (Celery imports from the current directory first, so that
# folder must be one nobody else can write to); without it, the home folder.
RUN useradd --create-home --uid 10001 distloop
USER distloop
WORKDIR /home/distloop

# Default: a worker with one process per CPU of the container.
CMD ["distloop", "worker"]
